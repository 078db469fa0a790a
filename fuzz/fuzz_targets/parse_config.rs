//! The config.pbtxt parser on arbitrary text: it returns a value or an error with a span inside
//! the text, and never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triton_deploy::triton::{model_config, pbtxt};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match model_config::parse(text) {
        Ok(parsed) => {
            let _ = model_config::to_canonical_json(&parsed.source);
            for s in parsed.source.spans.values() {
                assert!(s.whole.start <= s.whole.end && s.whole.end <= text.len());
                assert!(text.is_char_boundary(s.whole.start) && text.is_char_boundary(s.whole.end));
            }
        }
        Err(e) => {
            assert!(e.span.start <= e.span.end && e.span.end <= text.len(), "{e:?}");
            assert!(text.is_char_boundary(e.span.start) && text.is_char_boundary(e.span.end));
            let _ = pbtxt::line_col(text, e.span.start);
        }
    }
});
