//! The web page in a real browser: Debian's headless Chromium driven over the DevTools protocol
//! (chromiumoxide), against a real server with the tiny models.
//!
//! Runs wherever a Chromium is found (`CHROMIUM`, or `chromium` / `chromium-browser` /
//! `google-chrome` on PATH) and says so when it is skipped; `SAKIKO_BROWSER_TEST=1` (set by CI)
//! makes a missing browser a failure. The page after its first image is saved as an artefact:
//! `target/tmp/page.png`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use common::{TestServer, long_steps};
use futures_util::StreamExt;
use sakiko_server::{EngineOptions, ServerConfig};
use serde_json::Value;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
    })
}

async fn eval(page: &Page, js: &str) -> Value {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or(Value::Null)
}

/// Polls `js` until it is truthy (the page works asynchronously).
async fn until(page: &Page, js: &str) -> Value {
    for _ in 0..600 {
        let v = eval(page, js).await;
        if !(v.is_null() || v == false || v == "" || v == 0) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for `{js}`");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_generates_previews_cancels_and_reuses_settings() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("SAKIKO_BROWSER_TEST").is_none(),
            "SAKIKO_BROWSER_TEST is set but no Chromium was found"
        );
        eprintln!("no Chromium found: the browser test did not run");
        return;
    };
    let server = TestServer::start(
        ServerConfig {
            api_key: Some("page-key".into()),
            ..long_steps()
        },
        EngineOptions::default(),
    )
    .await;
    let profile = tempfile::tempdir().expect("profile dir");
    let (mut browser, mut handler) = Browser::launch(
        BrowserConfig::builder()
            .chrome_executable(chromium)
            .no_sandbox()
            .user_data_dir(profile.path())
            .arg("--disable-gpu")
            .build()
            .expect("browser config"),
    )
    .await
    .expect("Chromium starts");
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser
        .new_page(server.url("/"))
        .await
        .expect("the page opens");

    // The API key field: without it the lists cannot load (401), with it they do.
    until(
        &page,
        "document.getElementById('error').textContent.includes('API key')",
    )
    .await;
    eval(
        &page,
        "const k = document.getElementById('api-key'); k.value = 'page-key'; \
         k.dispatchEvent(new Event('change')); true",
    )
    .await;
    until(&page, "document.getElementById('sampler').options.length").await;
    assert_eq!(
        eval(&page, "document.getElementById('sampler').value").await,
        "euler_ancestral"
    );

    // The tag builder and the server's validation messages (with line:col).
    eval(
        &page,
        "document.querySelector('[data-section=general]').click(); true",
    )
    .await;
    let text = eval(&page, "document.getElementById('prompt').value").await;
    assert_eq!(text, "<tags>\n<general></general>\n</tags>");
    eval(
        &page,
        "const p = document.getElementById('prompt'); p.value = '<tags>\\n<general>blue hair</tags>'; \
         p.dispatchEvent(new Event('input')); true",
    )
    .await;
    let message = until(
        &page,
        "document.querySelector('#diagnostics .error')?.textContent",
    )
    .await;
    assert!(
        message.as_str().unwrap().starts_with("error 2:"),
        "{message}"
    );

    // Size presets.
    eval(
        &page,
        "document.querySelector('[data-size=\"832x1216\"]').click(); true",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('width').value").await,
        "832"
    );
    assert_eq!(
        eval(&page, "document.getElementById('height').value").await,
        "1216"
    );

    // Generate: progress, previews, then the gallery with the parameters.
    eval(
        &page,
        "const set = (id, v) => document.getElementById(id).value = v; \
         set('prompt', '<tags>\\n<special>1girl</special>\\n<general>blue hair</general>\\n</tags>'); \
         document.getElementById('prompt').dispatchEvent(new Event('input')); \
         set('width', 64); set('height', 48); set('steps', 6); set('seed', 42); \
         document.getElementById('generate').click(); true",
    )
    .await;
    until(&page, "document.querySelectorAll('#gallery figure').length").await;
    // The corrected prompt's check cleared the earlier error.
    until(
        &page,
        "document.getElementById('diagnostics').textContent === ''",
    )
    .await;
    let caption = eval(
        &page,
        "document.querySelector('#gallery figcaption').textContent",
    )
    .await;
    assert!(caption.as_str().unwrap().contains("Seed: 42"), "{caption}");
    until(&page, "document.querySelector('#gallery img').complete && document.querySelector('#gallery img').naturalWidth == 64").await;
    assert!(
        eval(&page, "document.getElementById('status').textContent")
            .await
            .as_str()
            .unwrap()
            .starts_with("done")
    );
    let preview = eval(&page, "document.getElementById('preview').src").await;
    // Fetched with the key (an <img src> could not send it) and shown from a blob URL.
    assert!(preview.as_str().unwrap().starts_with("blob:"), "{preview}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page.png");
    page.save_screenshot(
        ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .full_page(true)
            .build(),
        &shot,
    )
    .await
    .expect("screenshot");
    eprintln!("screenshot: {}", shot.display());

    // Reuse settings.
    eval(&page, "document.getElementById('seed').value = 7; document.getElementById('steps').value = 1000; true").await;
    eval(
        &page,
        "document.querySelector('#gallery figure button').click(); true",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('seed').value").await,
        "42"
    );
    assert_eq!(
        eval(&page, "document.getElementById('steps').value").await,
        "6"
    );

    // Cancel a long run: a preview arrives, then Cancel stops it.
    eval(
        &page,
        "document.getElementById('steps').value = 1000; document.getElementById('preview').removeAttribute('src'); \
         document.getElementById('generate').click(); true",
    )
    .await;
    until(&page, "(document.getElementById('preview').getAttribute('src') || '').startsWith('data:image/png')").await;
    eval(&page, "document.getElementById('cancel').click(); true").await;
    until(
        &page,
        "document.getElementById('status').textContent == 'cancelled'",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('generate').disabled").await,
        false
    );
    assert_eq!(
        eval(&page, "document.querySelectorAll('#gallery figure').length").await,
        1
    );

    browser.close().await.expect("close");
    let _ = browser.wait().await;
    events.abort();
    server.shutdown().await.unwrap();
}
