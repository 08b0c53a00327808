//! What several stages read and write in the same form, one layer beneath them: the kind of problem a
//! row holds ([`domain`]), the instruction a
//! problem is put under and a reference answer's last line ([`prompt`]), rows read as chat conversations
//! ([`conversation`]), reference steps with calculator annotations ([`steps`]) and the Countdown problem
//! ([`countdown`]). A stage that needs what another stage makes finds it here, never in that stage.

pub mod conversation;
pub mod countdown;
pub mod domain;
pub mod prompt;
pub mod steps;
