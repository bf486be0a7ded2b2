//! The payload check: do these bytes hold exactly one JSON value (RFC 8259) in UTF-8?
//!
//! Every payload passes it before it is stored, so it is on the append path of every event the
//! store did not parse itself. It accepts exactly what `serde_json::from_slice::<&RawValue>`
//! accepts, which is what Herald checked with before (a property test below compares the two on
//! generated, mutated and random inputs):
//! - one value, with optional whitespace (space, tab, LF, CR) before and after it;
//! - any nesting depth (serde_json does not limit the depth of a raw value either);
//! - any `\uXXXX` escape with four hex digits, a lone surrogate included;
//! - UTF-8 checked, over the strings (the grammar admits nothing but ASCII outside them).
//!
//! It reads the input once, allocates only for nesting deeper than 128, and scans strings (the
//! bulk of most payloads) sixteen bytes at a time. On a 256-byte object it takes about a third of
//! serde_json's time, which was a quarter of an unsynced append (`docs/benchmarks.md`).

/// Why the bytes are not one JSON value: the offset of the first byte that breaks the grammar
/// (the input's length when it ends too early), or of the first byte of bad UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotJson {
    pub offset: usize,
}

/// `Ok` when `input` is exactly one JSON value, optionally surrounded by whitespace.
pub(crate) fn check_json(input: &[u8]) -> Result<(), NotJson> {
    let mut checker = Checker { input, at: 0, non_ascii: false };
    checker.value()?;
    checker.skip_whitespace();
    if checker.at != input.len() {
        return Err(NotJson { offset: checker.at });
    }
    if checker.non_ascii {
        std::str::from_utf8(input).map_err(|error| NotJson { offset: error.valid_up_to() })?;
    }
    Ok(())
}

/// The end of the run of plain string bytes at `at`: the offset of the first quote, backslash
/// or control character (or the input's end). `non_ascii` is set if the run holds a byte above
/// 0x7F. Sixteen bytes per step with SSE2, which every x86-64 processor has.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)] // SSE2 intrinsics and one unaligned load, bounds checked before it
fn plain_run_end(input: &[u8], mut at: usize, non_ascii: &mut bool) -> usize {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut high = 0u32;
    while at + 16 <= input.len() {
        // SAFETY: this function exists only where `target_feature = "sse2"` is on, and
        // `at + 16 <= input.len()`, so the 16 bytes loaded (no alignment needed) lie inside
        // `input`.
        let (special, high_bits) = unsafe {
            let bytes = _mm_loadu_si128(input.as_ptr().add(at).cast());
            // A byte is a control character when min(byte, 0x1F) == byte (unsigned).
            let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1F)), bytes);
            let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            let special = _mm_or_si128(_mm_or_si128(quote, backslash), control);
            (_mm_movemask_epi8(special) as u32, _mm_movemask_epi8(bytes) as u32)
        };
        if special != 0 {
            let first = special.trailing_zeros();
            high |= high_bits & ((1 << first) - 1);
            *non_ascii |= high != 0;
            return at + first as usize;
        }
        high |= high_bits;
        at += 16;
    }
    *non_ascii |= high != 0;
    plain_run_end_bytewise(input, at, non_ascii)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn plain_run_end(input: &[u8], at: usize, non_ascii: &mut bool) -> usize {
    plain_run_end_bytewise(input, at, non_ascii)
}

fn plain_run_end_bytewise(input: &[u8], mut at: usize, non_ascii: &mut bool) -> usize {
    while let Some(&byte) = input.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        *non_ascii |= byte >= 0x80;
        at += 1;
    }
    at
}

/// Which containers enclose the current value: one bit per level (1 = object), the innermost in
/// the low bit of `top`; levels beyond 128 spill into `deeper`.
#[derive(Default)]
struct Nesting {
    top: u128,
    levels_in_top: u32,
    deeper: Vec<u128>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.levels_in_top == u128::BITS {
            self.deeper.push(self.top);
            self.top = 0;
            self.levels_in_top = 0;
        }
        self.top = self.top << 1 | u128::from(object);
        self.levels_in_top += 1;
    }

    fn pop(&mut self) {
        self.top >>= 1;
        self.levels_in_top -= 1;
        if self.levels_in_top == 0 {
            if let Some(word) = self.deeper.pop() {
                self.top = word;
                self.levels_in_top = u128::BITS;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.levels_in_top == 0
    }

    fn in_object(&self) -> bool {
        self.top & 1 == 1
    }
}

struct Checker<'a> {
    input: &'a [u8],
    at: usize,
    /// Whether a string held a byte above 0x7F (then the whole input is checked as UTF-8).
    non_ascii: bool,
}

impl Checker<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn error<T>(&self) -> Result<T, NotJson> {
        Err(NotJson { offset: self.at })
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `byte` after optional whitespace, or fails there.
    fn expect(&mut self, byte: u8) -> Result<(), NotJson> {
        self.skip_whitespace();
        if self.peek() != Some(byte) {
            return self.error();
        }
        self.at += 1;
        Ok(())
    }

    /// One value and everything nested in it; iterative, so depth costs no stack.
    fn value(&mut self) -> Result<(), NotJson> {
        let mut nesting = Nesting::default();
        'value: loop {
            self.skip_whitespace();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.at += 1;
                    let object = open == b'{';
                    let close = if object { b'}' } else { b']' };
                    self.skip_whitespace();
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        nesting.push(object);
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.at += 1;
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return self.error(),
            }
            // A value ended: close containers until one continues with a comma.
            while !nesting.is_empty() {
                self.skip_whitespace();
                let object = nesting.in_object();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return self.error(),
                }
                self.at += 1;
                nesting.pop();
            }
            return Ok(());
        }
    }

    /// An object member's key and its colon.
    fn key(&mut self) -> Result<(), NotJson> {
        self.expect(b'"')?;
        self.string()?;
        self.expect(b':')
    }

    /// The rest of a string whose opening quote was consumed.
    fn string(&mut self) -> Result<(), NotJson> {
        loop {
            self.at = plain_run_end(self.input, self.at, &mut self.non_ascii);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    self.escape()?;
                }
                _ => return self.error(),
            }
        }
    }

    /// The rest of an escape whose backslash was consumed.
    fn escape(&mut self) -> Result<(), NotJson> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 1,
            Some(b'u') => {
                self.at += 1;
                for _ in 0..4 {
                    if !self.peek().is_some_and(|byte| byte.is_ascii_hexdigit()) {
                        return self.error();
                    }
                    self.at += 1;
                }
            }
            _ => return self.error(),
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
                    return self.error();
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.error(),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return self.error();
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.error();
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), NotJson> {
        for &expected in word {
            if self.peek() != Some(expected) {
                return self.error();
            }
            self.at += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn serde_accepts(input: &[u8]) -> bool {
        serde_json::from_slice::<&serde_json::value::RawValue>(input).is_ok()
    }

    #[track_caller]
    fn agrees(input: &[u8]) {
        assert_eq!(
            check_json(input).is_ok(),
            serde_accepts(input),
            "input {:?}: check_json {:?}",
            String::from_utf8_lossy(input),
            check_json(input)
        );
    }

    #[test]
    fn accepts_json_values_and_rejects_the_rest_like_serde_json() {
        let cases: &[&[u8]] = &[
            b"{}",
            b" [ ] ",
            b"{\"a\":1}",
            b"{\"a\" : [1, 2.5, -0, 1e10, 1E+2, 2e-3, true, false, null, \"x\"]}\r\n\t",
            b"\"\\u00e9\\ud800\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"héllo wörld, ça va? 日本語 😀\"".as_bytes(),
            b"0",
            b"-1.0e-0",
            b"",
            b" ",
            b"{",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{1:2}",
            b"[1 2]",
            b"01",
            b"-",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"+1",
            b"tru",
            b"nulls",
            b"\"abc",
            b"\"a\x01b\"",
            b"\"a\tb\"",
            b"\"\\x\"",
            b"\"\\u12G4\"",
            b"\"\\u123\"",
            b"{}{}",
            b"[]]",
            b"\"\xff\"",
            b"\"\xc3\"",
            b"\"\xc3\xa9\"",
            b"\xef\xbb\xbf{}",
            b"\"0123456789abcdef\\\"0123456789abcdef\\u0041 0123456789\"",
            b"\"01234567\x7f01234567\xe2\x82\xac01234567\"",
            b"\"0123456\x1f\"",
            b"[\"\xc3\xa9\", \"\xc3\"]",
        ];
        for case in cases {
            agrees(case);
        }
    }

    #[test]
    fn every_byte_at_every_offset_of_a_long_string() {
        // Covers both the 16-byte steps and the byte-wise tail, at every lane.
        for length in [15usize, 16, 17, 40] {
            for at in 0..length {
                for byte in [b'"', b'\\', 0x00, 0x01, 0x1F, 0x20, 0x7F, 0x80, 0xC3, 0xFF, b'a'] {
                    let mut text = vec![b'a'; length];
                    text[at] = byte;
                    let mut input = b"[\"".to_vec();
                    input.extend_from_slice(&text);
                    input.extend_from_slice(b"\"]");
                    agrees(&input);
                    // And a valid two-byte character there.
                    text[at] = 0xC3;
                    text.insert(at + 1, 0xA9);
                    let mut input = b"\"".to_vec();
                    input.extend_from_slice(&text);
                    input.push(b'"');
                    agrees(&input);
                }
            }
        }
    }

    #[test]
    fn depth_has_no_limit_and_closing_must_match() {
        for depth in [1usize, 127, 128, 129, 256, 300, 10_000] {
            let mut arrays = "[".repeat(depth);
            arrays.push_str(&"]".repeat(depth));
            assert!(check_json(arrays.as_bytes()).is_ok(), "depth {depth}");
            agrees(arrays.as_bytes());
            let mut objects = "{\"k\":".repeat(depth);
            objects.push('1');
            objects.push_str(&"}".repeat(depth));
            agrees(objects.as_bytes());
            // One closer of the wrong kind deep inside.
            let mut mixed = "[{\"k\":".repeat(depth);
            mixed.push('0');
            mixed.push_str(&"}]".repeat(depth - 1));
            mixed.push_str("]]");
            assert!(check_json(mixed.as_bytes()).is_err(), "depth {depth}");
            agrees(mixed.as_bytes());
            agrees(&arrays.as_bytes()[..arrays.len() - 1]);
        }
    }

    #[test]
    fn the_offset_is_where_the_grammar_breaks() {
        assert_eq!(check_json(b"[1, 2,]"), Err(NotJson { offset: 6 }));
        assert_eq!(check_json(b"{\"a\" 1}"), Err(NotJson { offset: 5 }));
        assert_eq!(check_json(b"[1"), Err(NotJson { offset: 2 }));
        assert_eq!(check_json(b"{} x"), Err(NotJson { offset: 3 }));
        assert_eq!(check_json(b"\"ab\xffcdefghijkl\""), Err(NotJson { offset: 3 }));
    }

    /// JSON-like text: valid values, with tokens that are often almost right.
    fn jsonish() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("fals".to_string()),
            "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            "-?0[0-9]|[0-9]\\.|\\.[0-9]|[0-9]e",
            "\"([a-zé€😀 \\t\\x01\"]|\\\\[\"\\\\/bfnrtux]|\\\\u[0-9a-fA-FgG]{4}){0,24}\"",
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r")];
            prop_oneof![
                (prop::collection::vec((inner.clone(), ws.clone()), 0..6), prop::bool::weighted(0.1)).prop_map(
                    |(items, comma)| {
                        let body: Vec<String> = items.into_iter().map(|(item, ws)| format!("{ws}{item}{ws}")).collect();
                        format!("[{}{}]", body.join(","), if comma { "," } else { "" })
                    }
                ),
                (prop::collection::vec(("\"[a-z]{0,3}\"|[a-z]", inner, ws), 0..6), prop::bool::weighted(0.9)).prop_map(
                    |(members, colon)| {
                        let sep = if colon { ":" } else { "" };
                        let body: Vec<String> =
                            members.into_iter().map(|(key, value, ws)| format!("{ws}{key}{ws}{sep}{value}")).collect();
                        format!("{{{}}}", body.join(","))
                    }
                ),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_serde_json_on_jsonish_text(text in jsonish()) {
            prop_assert_eq!(check_json(text.as_bytes()).is_ok(), serde_accepts(text.as_bytes()), "{}", text);
        }

        #[test]
        fn agrees_with_serde_json_on_mutated_text(text in jsonish(), at in any::<prop::sample::Index>(), byte in any::<u8>(), how in 0..3u8) {
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = byte,
                    1 => { bytes.remove(at); }
                    _ => bytes.insert(at, byte),
                }
            }
            prop_assert_eq!(check_json(&bytes).is_ok(), serde_accepts(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn agrees_with_serde_json_on_random_bytes(bytes in prop::collection::vec(prop_oneof![
            Just(b'"'), Just(b'\\'), Just(b'['), Just(b']'), Just(b'{'), Just(b'}'), Just(b','), Just(b':'),
            Just(b'1'), Just(b' '), any::<u8>()], 0..40)) {
            prop_assert_eq!(check_json(&bytes).is_ok(), serde_accepts(&bytes));
        }
    }
}
