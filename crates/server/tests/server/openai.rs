//! The OpenAI Images API (generations, edits, models), driven by async-openai and reqwest.

use std::ops::ControlFlow;

use burn::backend::Flex;
use sakiko_pipeline::{GenerationRequest, Pipeline};
use serde_json::{Value, json};

use crate::common::{self, TestServer, b64_decode, error_of, parse_sse};
use crate::rgb;

/// OpenAI Images through the async-openai client, and the SSE stream with partial images.
#[tokio::test(flavor = "multi_thread")]
async fn openai_images_and_models() {
    use async_openai::types::images::{CreateImageRequestArgs, ImageResponseFormat};
    let server = TestServer::default().await;
    let client = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(server.url("/v1"))
            .with_api_key("unused"),
    );
    let request = CreateImageRequestArgs::default()
        .prompt("1girl, cherry blossoms")
        .n(2)
        .size(async_openai::types::images::ImageSize::Other(
            "64x48".into(),
        ))
        .response_format(ImageResponseFormat::B64Json)
        .build()
        .unwrap();
    let response = client
        .images()
        .generate(request)
        .await
        .expect("OpenAI images");
    assert_eq!(response.data.len(), 2);
    for image in response.data.iter() {
        let async_openai::types::images::Image::B64Json { b64_json, .. } = image.as_ref() else {
            panic!("b64_json expected");
        };
        assert_eq!(rgb(&b64_decode(b64_json)).dimensions(), (64, 48));
    }
    let models = client.models().list().await.expect("models");
    assert_eq!(models.data[0].id, "tiny_lumina_bf16.safetensors");

    // Streaming: partial images, then the final one.
    let text = server
        .post(
            "/v1/images/generations",
            &json!({"prompt": "1girl", "size": "64x48", "steps": 4, "stream": true, "partial_images": 2, "seed": 3}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    let partial: Vec<&Value> = events
        .iter()
        .filter_map(|(e, d)| (e == "image_generation.partial_image").then_some(d))
        .collect();
    assert_eq!(partial.len(), 2, "{events:?}");
    assert_eq!(partial[1]["partial_image_index"], 1);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "image_generation.completed");
    assert_eq!(data["type"], "image_generation.completed");
    assert_eq!(
        rgb(&b64_decode(data["b64_json"].as_str().unwrap())).dimensions(),
        (64, 48)
    );

    // URLs instead of base64.
    let r: Value = server
        .post(
            "/v1/images/generations",
            &json!({"prompt": "1girl", "size": "64x48", "steps": 2, "response_format": "url"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let url = r["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&server.base), "{url}");
    assert_eq!(reqwest::get(url).await.unwrap().status(), 200);
    server.shutdown().await.unwrap();
}

/// OpenAI edits (multipart, as the OpenAI SDKs and Open WebUI send them): image-to-image from the
/// upload, at its own size (down to multiples of 16) unless `size` says, the same pixels as the
/// library's img2img; streamed as `image_edit.*`; masks, missing or extra images and non-images
/// refused with 400 JSON.
#[tokio::test(flavor = "multi_thread")]
async fn openai_edits() {
    use async_openai::types::images::{CreateImageEditRequestArgs, ImageEditInput, ImageInput};
    use reqwest::multipart::{Form, Part};
    let server = TestServer::default().await;
    let init = image::open(common::pipeline_fixture("e2e/init.png"))
        .unwrap()
        .resize_exact(72, 52, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut png = Vec::new();
    init.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();

    let client = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(server.url("/v1"))
            .with_api_key("unused"),
    );
    let request = CreateImageEditRequestArgs::default()
        .image(ImageEditInput::Image(ImageInput::from_vec_u8(
            "init.png".into(),
            png.clone(),
        )))
        .prompt("1girl, smile")
        .build()
        .unwrap();
    // Extras (steps, seed, strength) ride along as form fields; async-openai has no place for
    // them, so this request runs the defaults: check only its size.
    let response = client.images().edit(request).await.expect("OpenAI edit");
    let async_openai::types::images::Image::B64Json { b64_json, .. } = response.data[0].as_ref()
    else {
        panic!("b64_json expected");
    };
    assert_eq!(
        rgb(&b64_decode(b64_json)).dimensions(),
        (64, 48),
        "auto size"
    );

    let form = |png: &[u8]| {
        Form::new()
            .text("prompt", "1girl, smile")
            .text("steps", "4")
            .text("seed", "5")
            .text("strength", "0.6")
            .part("image[]", Part::bytes(png.to_vec()).file_name("init.png"))
    };
    let post = |form: Form| {
        server
            .client
            .post(server.url("/v1/images/edits"))
            .multipart(form)
            .send()
    };
    let r: Value = post(form(&png)).await.unwrap().json().await.unwrap();
    let served = rgb(&b64_decode(r["data"][0]["b64_json"].as_str().unwrap()));
    let mut pipeline = Pipeline::<Flex>::builder(common::files()).build().unwrap();
    let request = GenerationRequest::new("1girl, smile")
        .size(64, 48)
        .steps(4)
        .seed(5)
        .init_image(init, 0.6);
    let g = pipeline
        .generate(&request, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(served, g.images[0].to_rgb8(), "same edit, same pixels");

    let text = post(
        form(&png)
            .text("stream", "true")
            .text("partial_images", "1"),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let events = parse_sse(&text);
    assert!(
        events.iter().any(|(e, _)| e == "image_edit.partial_image"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap().0, "image_edit.completed");

    for (form, needle) in [
        (
            form(&png).part("mask", Part::bytes(png.clone()).file_name("mask.png")),
            "inpainting",
        ),
        (
            form(&png).part("image[]", Part::bytes(png.clone()).file_name("b.png")),
            "one `image`",
        ),
        (Form::new().text("prompt", "1girl"), "needs `image`"),
        (form(b"not a picture"), "not a PNG"),
        (form(&png).text("size", "64by48"), "WIDTHxHEIGHT"),
        (form(&png).text("steps", "many"), "edit form"),
    ] {
        let (status, message) = error_of(post(form).await.unwrap()).await;
        assert_eq!(status, 400, "{message}");
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let (status, _) = error_of(
        server
            .post("/v1/images/edits", &json!({"prompt": "x"}))
            .await,
    )
    .await;
    assert!(
        (400..500).contains(&status),
        "JSON to a form route: {status}"
    );
    server.shutdown().await.unwrap();
}
