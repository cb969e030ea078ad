//! The AUTOMATIC1111 API: txt2img, samplers, schedulers, models, options, LoRAs.

use crate::common::{self, TestServer, error_of};
use serde_json::{Value, json};

/// A1111: txt2img (info as a JSON string with infotexts and seeds), img2img, the lists, options.
#[tokio::test(flavor = "multi_thread")]
async fn automatic1111_api() {
    let server = TestServer::default().await;
    let body = json!({
        "prompt": "1girl", "negative_prompt": "lowres", "width": 64, "height": 48, "steps": 3,
        "cfg_scale": 4.0, "seed": 5, "batch_size": 2, "sampler_name": "Euler a",
        "scheduler": "Automatic", "enable_hr": false, "restore_faces": false
    });
    let r: Value = server
        .post("/sdapi/v1/txt2img", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["images"].as_array().unwrap().len(), 2);
    assert_eq!(r["parameters"]["prompt"], "1girl");
    let info: Value = serde_json::from_str(r["info"].as_str().expect("info is a string")).unwrap();
    assert_eq!(info["seed"], 5);
    assert_eq!(info["all_seeds"], json!([5, 5]));
    assert_eq!(info["sampler_name"], "euler_ancestral");
    assert!(
        info["infotexts"][0]
            .as_str()
            .unwrap()
            .contains("Negative prompt: lowres")
    );

    let init = std::fs::read(common::pipeline_fixture("e2e/init.png")).unwrap();
    use base64::Engine as _;
    let init = base64::engine::general_purpose::STANDARD.encode(init);
    let r: Value = server
        .post(
            "/sdapi/v1/img2img",
            &json!({"prompt": "1girl", "width": 64, "height": 48, "steps": 4, "seed": 1,
                    "init_images": [init], "denoising_strength": 0.5}),
        )
        .await
        .json()
        .await
        .unwrap();
    let info: Value = serde_json::from_str(r["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["denoising_strength"], 0.5);
    assert!(r["parameters"].get("init_images").is_none());
    let (status, message) = error_of(
        server
            .post(
                "/sdapi/v1/img2img",
                &json!({"prompt": "x", "width": 64, "height": 48}),
            )
            .await,
    )
    .await;
    assert_eq!((status, message.contains("init_images")), (400, true));

    let samplers: Value = server.get("/sdapi/v1/samplers").await.json().await.unwrap();
    assert!(
        samplers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "euler_ancestral" && s["aliases"][0] == "Euler a")
    );
    let schedulers: Value = server
        .get("/sdapi/v1/schedulers")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        schedulers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "linear_quadratic")
    );
    let models: Value = server
        .get("/sdapi/v1/sd-models")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(models[0]["title"], "tiny_lumina_bf16.safetensors");
    let options: Value = server.get("/sdapi/v1/options").await.json().await.unwrap();
    assert_eq!(
        options["sd_model_checkpoint"],
        "tiny_lumina_bf16.safetensors"
    );
    let ok = server
        .post(
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": "tiny_lumina_bf16"}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let (status, message) = error_of(
        server
            .post(
                "/sdapi/v1/options",
                &json!({"sd_model_checkpoint": "other.safetensors"}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.contains("tiny_lumina_bf16.safetensors"),
        "{message}"
    );
    let loras: Value = server.get("/sdapi/v1/loras").await.json().await.unwrap();
    assert_eq!(loras, json!([]), "no adapters folder");
    server.shutdown().await.unwrap();
}
