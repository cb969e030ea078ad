//! `sakiko doctor`: does this backend compute right here? The parity suite of
//! `sakiko_pipeline::doctor` on the chosen backend and dtype against Flex in f32; on CUDA and
//! wgpu with and without fusion.

use burn::backend::Flex;
use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;
use clap::Args;
use sakiko_pipeline::doctor::{self, CheckResult, Kernels, Status};
use serde::Serialize;

use crate::CliError;
use crate::backend::{BackendChoice, Settings, settings};
use crate::files::DitDtype;

/// `sakiko doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The backend to check.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// The compute dtype to check (auto: what `generate` uses there: bf16 on CUDA, f32 elsewhere).
    #[arg(long, value_enum, default_value_t = DitDtype::Auto)]
    dtype: DitDtype,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    /// The backend's own description of its device.
    device: String,
    /// The GPU and driver, where the backend says.
    adapter: Option<String>,
    dtype: String,
    settings: Settings,
    reference: &'static str,
    /// One run of the suite per code path (fused and unfused on CubeCL backends).
    paths: Vec<Path>,
    passed: bool,
}

#[derive(Debug, Serialize)]
struct Path {
    name: &'static str,
    checks: Vec<CheckResult>,
}

impl DoctorArgs {
    pub fn run(self) -> Result<(), CliError> {
        let report = match self.backend {
            BackendChoice::Flex => self.check::<Flex>(Default::default(), None, |dev, dtype| {
                vec![path::<Flex>("flex", dev, dtype)]
            })?,
            #[cfg(feature = "wgpu")]
            BackendChoice::Wgpu => {
                use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
                self.check::<burn::backend::Wgpu>(
                    Default::default(),
                    crate::backend::wgpu_adapter(),
                    |dev, dtype| {
                        vec![
                            path::<burn::backend::Wgpu>("fusion", dev, dtype),
                            path::<CubeBackend<WgpuRuntime, f32, i32, u32>>(
                                "no fusion",
                                &Default::default(),
                                dtype,
                            ),
                        ]
                    },
                )?
            }
            // (burn-cuda does not export its unfused backend, so CUDA checks the fused path.)
            #[cfg(feature = "cuda")]
            BackendChoice::Cuda => {
                let adapter = crate::backend::cuda_adapter();
                self.check::<burn::backend::Cuda>(Default::default(), adapter, |dev, dtype| {
                    vec![path::<burn::backend::Cuda>("fusion", dev, dtype)]
                })?
            }
            #[allow(unreachable_patterns)]
            other => return Err(other.not_compiled()),
        };
        if self.json {
            let json =
                serde_json::to_string(&report).map_err(|e| CliError::Failed(e.to_string()))?;
            println!("{json}");
        } else {
            print_text(&report);
        }
        if report.passed {
            Ok(())
        } else {
            Err(CliError::Failed(
                "some checks failed: this backend's results here in this dtype are further from \
                 the reference than a correct implementation's rounding; use another backend or \
                 dtype (and please report it with `sakiko doctor --json`)"
                    .into(),
            ))
        }
    }

    /// Probes `B` on `device`, resolves the dtype, runs `paths` and builds the report.
    fn check<B: Backend>(
        &self,
        device: B::Device,
        adapter: Option<String>,
        paths: impl FnOnce(&B::Device, FloatDType) -> Vec<Path>,
    ) -> Result<Report, CliError> {
        crate::backend::probe::<B>(&device)?;
        let dtype = self
            .dtype
            .float()
            .unwrap_or_else(|| sakiko_pipeline::auto_dtype::<B>(&device));
        let dtype_name = format!("{dtype:?}").to_lowercase();
        if !B::supports_dtype(&device, dtype.into()) {
            return Err(CliError::Usage(format!(
                "the {} backend cannot compute in {dtype_name} on this device; choose another \
                 --dtype",
                sakiko_pipeline::backend_name::<B>(),
            )));
        }
        let paths = paths(&device, dtype);
        Ok(Report {
            backend: sakiko_pipeline::backend_name::<B>(),
            device: B::name(&device),
            adapter,
            dtype: dtype_name,
            settings: settings::<B>(),
            reference: "flex, f32",
            passed: paths.iter().all(|p| doctor::passed(&p.checks)),
            paths,
        })
    }
}

fn path<B: Backend>(name: &'static str, device: &B::Device, dtype: FloatDType) -> Path {
    Path {
        name,
        checks: doctor::run::<B, Flex>(device, &Default::default(), dtype, &Kernels::default()),
    }
}

fn print_text(r: &Report) {
    println!(
        "sakiko doctor: {} ({}), {}; {} threads; {}",
        r.backend,
        r.device,
        r.dtype,
        r.settings.threads,
        r.settings.features.join(", ")
    );
    if let Some(adapter) = &r.adapter {
        println!("adapter: {adapter}");
    }
    println!("reference: {}", r.reference);
    for path in &r.paths {
        if r.paths.len() > 1 {
            println!("{}:", path.name);
        }
        for c in &path.checks {
            let status = match c.status {
                Status::Pass => "ok  ",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            let diff = match (c.status, c.max_abs_diff) {
                (Status::Skip, _) => String::new(),
                (_, Some(d)) => format!("max |Δ| {d:.1e} (tolerance {:.1e})", c.tolerance),
                (_, None) => "did not run".into(),
            };
            let detail = c
                .detail
                .as_ref()
                .filter(|_| c.status != Status::Pass)
                .map_or(String::new(), |d| format!(": {d}"));
            println!("  {status}  {:<46} {diff}{detail}", c.name);
        }
    }
    let checks = r.paths.iter().flat_map(|p| &p.checks);
    let failed = checks.clone().filter(|c| c.status == Status::Fail).count();
    let ran = checks.filter(|c| c.status != Status::Skip).count();
    if failed == 0 {
        println!("verdict: all {ran} checks passed");
    } else {
        println!("verdict: {failed} of {ran} checks FAILED");
    }
}
