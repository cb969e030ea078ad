//! Models resident (`sakiko serve`) against a process per image (`sakiko generate`), with the
//! tiny end-to-end models: latency per image (p50, p95) and images per minute, one client at a
//! time and four at once. The tiny models make loading a large share of a run, which is what
//! keeping them resident removes; with real weights the gap is the load time (seconds) per image.
//!
//! ```text
//! cargo bench -p sakiko-cli --bench serve            # 12 images per mode
//! SAKIKO_BENCH_IMAGES=40 cargo bench -p sakiko-cli --bench serve
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{model_args, sakiko, serve};
use serde_json::json;

const STEPS: u32 = 8;
const CLIENTS: usize = 4;

fn main() {
    let images: usize = std::env::var("SAKIKO_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
        .max(CLIENTS);
    // `cargo bench` passes `--bench`; this harness has no options of its own.
    println!(
        "{images} images each, 64×48, {STEPS} steps, tiny models; {CLIENTS} clients at once\n"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>12}",
        "mode", "p50", "p95", "images/min"
    );

    let per_process = time_each(images, |i| generate(i as u64));
    report(
        "sakiko generate per image",
        &per_process,
        total(&per_process),
    );

    let (mut server, base) = serve(&[]);
    let client = reqwest::blocking::Client::new();
    txt2img(&client, &base, 0); // loads the models
    let resident = time_each(images, |i| txt2img(&client, &base, i as u64));
    report("sakiko serve, 1 client", &resident, total(&resident));

    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (client, base) = (client.clone(), &base);
                s.spawn(move || {
                    time_each(images / CLIENTS, |i| {
                        txt2img(&client, base, (c * images + i) as u64)
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect()
    });
    report(
        &format!("sakiko serve, {CLIENTS} clients"),
        &latencies,
        start.elapsed(),
    );
    let _ = server.kill();
    let _ = server.wait();

    let ratio =
        percentile(&per_process, 0.5).as_secs_f64() / percentile(&resident, 0.5).as_secs_f64();
    println!("\nresident is {ratio:.1}× faster per image (p50) than a process per image");
}

fn generate(seed: u64) {
    let out = tempfile::NamedTempFile::with_suffix(".png").expect("temp file");
    let status = sakiko()
        .arg("generate")
        .args(model_args())
        .args([
            "--prompt",
            "1girl, blue hair",
            "--width",
            "64",
            "--height",
            "48",
        ])
        .args([
            "--steps",
            &STEPS.to_string(),
            "--seed",
            &seed.to_string(),
            "--quiet",
            "-o",
        ])
        .arg(out.path())
        .status()
        .expect("sakiko generate runs");
    assert!(status.success(), "sakiko generate failed");
}

fn txt2img(client: &reqwest::blocking::Client, base: &str, seed: u64) {
    let body = json!({"prompt": "1girl, blue hair", "width": 64, "height": 48, "steps": STEPS,
                      "seed": seed});
    let response = client
        .post(format!("{base}/sdapi/v1/txt2img"))
        .json(&body)
        .send()
        .expect("txt2img answered");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().expect("the image");
}

fn time_each(n: usize, mut run: impl FnMut(usize)) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let start = Instant::now();
            run(i);
            start.elapsed()
        })
        .collect()
}

fn total(latencies: &[Duration]) -> Duration {
    latencies.iter().sum()
}

fn percentile(latencies: &[Duration], q: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn report(mode: &str, latencies: &[Duration], wall: Duration) {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!(
        "{mode:<28} {:>9} {:>9} {:>12.1}",
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.95)),
        latencies.len() as f64 / wall.as_secs_f64() * 60.0
    );
}
