use forge::model::chat::{ChatTemplate, Message};
use serde_json::Value;

use crate::util::shared_data;

/// Real chat templates (Qwen2.5, Qwen3, DeepSeek-R1-Distill, Llama 3.2, and llama.cpp/vLLM `.jinja` files)
/// render byte for byte as transformers renders them (`scripts/chat_template_fixtures.py` wrote the
/// expected texts with transformers 5.24).
#[test]
#[ignore = "needs ../shared/data"]
fn chat_templates_render_as_transformers_does() {
    let fixtures: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/chat_templates.json")).expect("fixture JSON");
    let mut checked = 0;
    for case in &fixtures {
        let name = case["template"].as_str().unwrap();
        let path = shared_data("hf-configs").join(name);
        let template = if name.ends_with("tokenizer_config.json") {
            ChatTemplate::from_dir(path.parent().unwrap()).unwrap()
        } else {
            let tokens = case["tokens"].as_object().unwrap().clone();
            ChatTemplate::new(&std::fs::read_to_string(&path).unwrap(), tokens).unwrap()
        };
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(&messages, add, case["extra"].as_object().unwrap()).unwrap();
        assert_eq!(got, case["expected"].as_str().unwrap(), "{name}, add_generation_prompt = {add}");
        checked += 1;
    }
    assert_eq!(checked, 32);
}
