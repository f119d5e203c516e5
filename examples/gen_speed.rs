//! Times `auditlake gen` without the CLI:
//! `cargo run --release --example gen_speed -- [EVENTS] [OUT_DIR]`.
//! Without OUT_DIR the lines are counted and dropped (generation speed
//! alone); with it, the files are written as `gen --out OUT_DIR` does.

use std::time::Instant;

use auditlake::r#gen::{CountingSink, GenArgs, generate, run_to_files};

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    let events: u64 = argv
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5_000_000);
    let out = argv.next();
    let args = GenArgs {
        events,
        out: out.map(Into::into),
        ..GenArgs::default()
    };
    let started = Instant::now();
    let (lines, bytes) = if args.out.is_some() {
        let r = run_to_files(&args)?;
        (
            r.manifest
                .topics
                .values()
                .map(|t| t.lines + t.blank)
                .sum::<u64>(),
            0,
        )
    } else {
        let mut sink = CountingSink::default();
        generate(&args, &mut sink)?;
        (sink.messages, sink.bytes)
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{events} api-access events ({lines} lines, {:.0} MB) in {secs:.2} s: {:.0} events/s",
        bytes as f64 / 1e6,
        events as f64 / secs
    );
    Ok(())
}
