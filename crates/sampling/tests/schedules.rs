//! σ tables and schedules equal ComfyUI's formulas as run by PyTorch (fixtures from
//! `tools/reference/sampling.py`).

mod common;

use common::{Fixtures, max_abs_diff};
use sakiko_sampling::{FlowSampling, Scheduler};

/// Tolerance for schedules: the reference uses PyTorch's vectorised `linspace`, `exp`, `tan` and
/// `pow`, which may differ from the scalar formulas in the last bit.
const TOL: f32 = 1e-6;

#[test]
fn sigma_tables() {
    let fx = Fixtures::load();
    for (name, shift, mult) in [
        ("table/shift6.0", 6.0, 1.0),
        ("table/shift1.73", 1.73, 1.0),
        ("table/shift1.0", 1.0, 1.0),
        ("table/shift6.0/mult1000", 6.0, 1000.0),
    ] {
        let ms = FlowSampling::with_multiplier(shift, mult).unwrap();
        let want = fx.values(name);
        let diff = max_abs_diff(ms.table(), &want);
        assert!(diff <= 1.2e-7, "{name}: max |diff| {diff:e}");
    }
    let ms = FlowSampling::lumina2();
    assert_eq!(ms.sigma_max(), 1.0);
}

#[test]
fn every_scheduler_matches_comfyui() {
    let fx = Fixtures::load();
    let mut checked = 0;
    let mut worst = (0.0f32, String::new());
    for shift in [6.0f32, 1.0] {
        let ms = FlowSampling::with_shift(shift).unwrap();
        for scheduler in Scheduler::ALL {
            for name in fx.names(&format!("schedule/{}/shift{shift:.1}/", scheduler.name())) {
                let rest = name.rsplit('/').collect::<Vec<_>>();
                let got = if rest[0].starts_with("denoise") {
                    let denoise: f64 = rest[0].trim_start_matches("denoise").parse().unwrap();
                    scheduler.sigmas_with_denoise(&ms, 30, denoise).unwrap()
                } else {
                    let steps: usize = rest[0].trim_start_matches("steps").parse().unwrap();
                    scheduler.sigmas(&ms, steps).unwrap()
                };
                let want = fx.values(&name);
                assert_eq!(got.len(), want.len(), "{name}: {got:?} vs {want:?}");
                let diff = max_abs_diff(&got, &want);
                assert!(
                    diff <= TOL,
                    "{name}: max |diff| {diff:e}\n{got:?}\n{want:?}"
                );
                if diff > worst.0 {
                    worst = (diff, name.clone());
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 140, "only {checked} schedules checked");
    println!(
        "{checked} schedules, worst max |diff| {:e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn recommended_schedule_is_shift_independent() {
    let a = Scheduler::LinearQuadratic
        .sigmas(&FlowSampling::lumina2(), 30)
        .unwrap();
    let b = Scheduler::LinearQuadratic
        .sigmas(&FlowSampling::with_shift(3.0).unwrap(), 30)
        .unwrap();
    assert_eq!(a, b);
}
