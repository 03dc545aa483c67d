//! The fuzzing harness: byte-level and token-level mutations of a target's seed corpus,
//! each input checked under `catch_unwind`.
//!
//! - `DRIFTLESS_FUZZ_SECS`: how long each target runs (default 12).
//! - `DRIFTLESS_FUZZ_SEED`: the RNG seed (default: fixed, so CI runs are reproducible; `make
//!   fuzz` passes a fresh one and prints it).
//! - `DRIFTLESS_FUZZ_REPLAY`: a file holding one input: every target whose name is in the
//!   file's name runs that input only.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes that break parsers: delimiters, escapes, NUL, UTF-8 lead bytes, signs, digits.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xbf\xc0\xc3\xe2\xef\xf0\xff\"'\\/{}[],:;=.-+0123456789eE \t\r\n%&?#";

/// Tokens every target gets besides its own dictionary.
const COMMON_TOKENS: &[&str] = &[
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "\"\"",
    "0",
    "-1",
    "1e999",
    "-0",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "\\u0000",
    "\\ud800",
    "%2F",
    "../",
    "\u{202e}",
    "\u{feff}",
];

/// What one target run did.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    pub secs: f64,
}

fn budget() -> Duration {
    let secs = std::env::var("DRIFTLESS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(12.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("DRIFTLESS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d21f_7e55)
}

fn crash_dir() -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join("fuzz-crashes")
}

/// Apply one random mutation to `buf`.
fn mutate_once(rng: &mut ChaCha8Rng, buf: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&str]) {
    let len = buf.len();
    match rng.gen_range(0..11) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            buf[i] ^= 1 << rng.gen_range(0..8);
        }
        // Overwrite a byte with an interesting one.
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            buf[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        // Insert interesting bytes.
        2 => {
            let i = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=4);
            for _ in 0..n {
                buf.insert(i, INTERESTING[rng.gen_range(0..INTERESTING.len())]);
            }
        }
        // Delete a range.
        3 if len > 0 => {
            let i = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - i).min(16));
            buf.drain(i..i + n);
        }
        // Duplicate a range in place.
        4 if len > 0 => {
            let i = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - i).min(64));
            let chunk: Vec<u8> = buf[i..i + n].to_vec();
            let at = rng.gen_range(0..=len);
            buf.splice(at..at, chunk);
        }
        // Truncate.
        5 if len > 0 => {
            let n = rng.gen_range(0..len);
            buf.truncate(n);
        }
        // Splice in a piece of another corpus entry.
        6 if !corpus.is_empty() => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            if !other.is_empty() {
                let i = rng.gen_range(0..other.len());
                let n = rng.gen_range(1..=(other.len() - i).min(128));
                let at = rng.gen_range(0..=len);
                buf.splice(at..at, other[i..i + n].iter().copied());
            }
        }
        // Replace a range with a token (the target's dictionary or the common one).
        7 | 8 => {
            let tok = if !dict.is_empty() && rng.gen_bool(0.6) {
                dict[rng.gen_range(0..dict.len())]
            } else {
                COMMON_TOKENS[rng.gen_range(0..COMMON_TOKENS.len())]
            };
            let i = rng.gen_range(0..=len);
            let n = if i < len {
                rng.gen_range(0..=(len - i).min(8))
            } else {
                0
            };
            buf.splice(i..i + n, tok.bytes());
        }
        // Replace a run of digits with an extreme number.
        9 => {
            if let Some(start) = (0..len)
                .find(|_| rng.gen_bool(0.02))
                .filter(|&i| buf[i].is_ascii_digit())
            {
                let end = (start..len).find(|&i| !buf[i].is_ascii_digit()).unwrap_or(len);
                let n: &[u8] = match rng.gen_range(0..4) {
                    0 => b"9223372036854775807",
                    1 => b"-9223372036854775808",
                    2 => b"99999999999999999999999",
                    _ => b"0",
                };
                buf.splice(start..end, n.iter().copied());
            }
        }
        // Random bytes.
        _ => {
            let i = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            buf.splice(i..i, bytes);
        }
    }
}

fn describe_panic(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Run `check` on the corpus, then on mutations of it until the time budget is spent.
/// `check` returns `Err` when a property fails; a panic inside it is a crash too. The
/// first failure stops the run and fails the test with the input saved to a file.
pub fn run(
    name: &str,
    corpus: &[Vec<u8>],
    dict: &[&str],
    max_len: usize,
    check: impl Fn(&[u8]) -> Result<(), String>,
) -> Report {
    let started = Instant::now();
    let fail = |input: &[u8], why: String, cases: u64| -> ! {
        let dir = crash_dir();
        let _ = std::fs::create_dir_all(&dir);
        let hash = input.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        });
        let path = dir.join(format!("{name}-{hash:016x}.bin"));
        let _ = std::fs::write(&path, input);
        // The quiet hook below would swallow this report too: back to the default hook.
        let _ = std::panic::take_hook();
        panic!(
            "fuzz target {name}: failure after {cases} cases (seed {}): {why}\n  input ({} bytes) saved to {}\n  input as text: {:?}\n  replay: DRIFTLESS_FUZZ_REPLAY={} cargo test --test fuzz {name}",
            seed(),
            input.len(),
            path.display(),
            String::from_utf8_lossy(&input[..input.len().min(400)]),
            path.display(),
        );
    };
    let once = |input: &[u8]| -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(r) => r,
            Err(p) => Err(format!("panicked: {}", describe_panic(&*p))),
        }
    };
    if let Ok(file) = std::env::var("DRIFTLESS_FUZZ_REPLAY") {
        if !file.contains(name) {
            return Report::default();
        }
        let input = std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        if let Err(why) = once(&input) {
            fail(&input, why, 1);
        }
        return Report { cases: 1, secs: 0.0 };
    }
    // A panic prints through the hook before catch_unwind sees it; keep the output to the
    // one failure report.
    let quiet = std::env::var("DRIFTLESS_FUZZ_VERBOSE").is_err();
    if quiet {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ name.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ b as u64));
    let mut cases = 0u64;
    for input in corpus {
        cases += 1;
        if let Err(why) = once(input) {
            fail(input, why, cases);
        }
    }
    let deadline = started + budget();
    let mut buf = Vec::with_capacity(max_len);
    while Instant::now() < deadline {
        for _ in 0..64 {
            buf.clear();
            if corpus.is_empty() || rng.gen_ratio(1, 50) {
                let n = rng.gen_range(0..64);
                buf.extend((0..n).map(|_| rng.gen::<u8>()));
            } else {
                buf.extend_from_slice(&corpus[rng.gen_range(0..corpus.len())]);
            }
            let rounds = 1 + rng.gen_range(0..8);
            for _ in 0..rounds {
                mutate_once(&mut rng, &mut buf, corpus, dict);
            }
            buf.truncate(max_len);
            cases += 1;
            if let Err(why) = once(&buf) {
                fail(&buf, why, cases);
            }
        }
    }
    if quiet {
        let _ = std::panic::take_hook();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {cases} cases in {secs:.1} s, 0 failures (seed {})",
        seed()
    );
    Report { cases, secs }
}

#[test]
fn the_harness_finds_a_planted_bug() {
    // The mutator must reach an input the corpus does not hold: a planted panic on a byte
    // sequence two mutations away from the seed.
    let r = catch_unwind(|| {
        run("planted", &[b"abcdef".to_vec()], &["XY"], 64, |b| {
            if b.windows(2).any(|w| w == b"XY") && b.contains(&b'\0') {
                panic!("planted");
            }
            Ok(())
        })
    });
    assert!(r.is_err(), "the planted bug was not found");
}
