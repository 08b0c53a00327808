use crate::util::{Scratch, ok, problems, shard_bytes};

#[test]
fn same_seed_same_bytes_other_seed_other_problems() {
    let s = Scratch::new();
    let (a, b, c) = (s.path("a"), s.path("b"), s.path("c"));
    for (dir, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        ok(&[&"synth", &"igsm", &"--n", &"3000", &"--seed", &seed, &"--rows-per-shard", &"1000", &"-o", dir, &"-q"]);
    }
    assert_eq!(shard_bytes(&a).len(), 3);
    assert_eq!(shard_bytes(&a), shard_bytes(&b));
    assert_ne!(problems(&a)[0].prompt, problems(&c)[0].prompt);
}

#[test]
fn synth_rows_carry_ids_source_and_checkable_steps() {
    let s = Scratch::new();
    let d = s.path("cd");
    ok(&[&"synth", &"countdown", &"--n", &"20", &"--ops", &"3", &"--seed", &"1", &"-o", &d, &"-q"]);
    let rows = problems(&d);
    assert_eq!(rows.len(), 20);
    for (i, p) in rows.iter().enumerate() {
        assert_eq!(p.id, format!("countdown-1-{i}"));
        assert_eq!(p.source, "synth/countdown");
        assert_eq!(p.domain, "countdown");
        let meta: serde_json::Value = serde_json::from_str(&p.metadata).unwrap();
        let nums: Vec<i128> = meta["nums"].as_array().unwrap().iter().map(|n| n.as_i64().unwrap() as i128).collect();
        assert_eq!(nums.len(), 4);
        let final_step = p.steps.as_ref().unwrap().last().unwrap();
        let solution = forge::expr::parse(&final_step.calcs[0].expr).unwrap();
        let mut used = solution.numbers();
        let mut given = nums.clone();
        used.sort();
        given.sort();
        assert_eq!(used, given, "{}", p.id);
        assert_eq!(Some(solution.eval().unwrap().to_string()), p.gold);
    }
}

#[test]
fn out_of_range_settings_are_refused() {
    let s = Scratch::new();
    let (code, _, stderr) = crate::util::run(&[&"synth", &"countdown", &"--ops", &"6", &"-o", &s.path("x")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("`--ops 6` is out of range for countdown"), "{stderr}");
    let (code, _, stderr) = crate::util::run(&[&"synth", &"igsm", &"--modulus", &"21", &"-o", &s.path("x")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("must be a prime"), "{stderr}");
    assert!(!s.path("x").exists());
}

#[test]
fn show_config_prints_resolved_defaults_and_writes_nothing() {
    let s = Scratch::new();
    let out = ok(&[&"synth", &"igsm", &"--n", &"5", &"-o", &s.path("d"), &"--show-config"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["synth"]["task"], "igsm");
    assert_eq!(v["synth"]["n"], 5);
    assert_eq!(v["synth"]["modulus"], forge::synth::DEFAULT_MODULUS);
    assert_eq!(v["output"]["rows_per_shard"], forge::dataset::DEFAULT_ROWS_PER_SHARD);
    assert!(!s.path("d").exists());
}
