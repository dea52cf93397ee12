//! Real Chromium over WebDriver (`chromedriver` + headless `chromium`, Debian's packages),
//! driven with `fantoccini`. A test that needs a browser FAILS when they are missing (`.ci/run`
//! installs them); it never skips. Every page a test visits can be saved as a PNG under
//! `target/ui-screenshots/<test>/` for a reviewer to look at.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::process::ChildProcess;

pub struct Browser {
    pub client: Client,
    /// `chromedriver`, in a process group of its own with the Chromium it starts, all
    /// killed when the test ends.
    driver: ChildProcess,
    shots: PathBuf,
    taken: usize,
}

fn installed(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !path.is_empty(),
        "{program} is not installed: the browser tests need Debian's chromium and \
         chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does it)"
    );
    PathBuf::from(path)
}

/// Where a test's screenshots go: `target/ui-screenshots/<test>/`, emptied first.
fn shots_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let dir = target.join("ui-screenshots").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

impl Browser {
    /// A headless Chromium, 1280×900 unless `window` says otherwise.
    pub async fn start(test: &str) -> Self {
        Self::start_sized(test, (1280, 900)).await
    }

    pub async fn start_sized(test: &str, window: (u32, u32)) -> Self {
        let chromium = installed("chromium");
        let chromedriver = installed("chromedriver");
        let port = super::closed_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .stderr(std::process::Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut driver = ChildProcess::spawn("chromedriver", cmd);
        loop {
            let line = driver.next_line(Duration::from_secs(20)).await;
            if line.contains("started successfully") {
                break;
            }
        }
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    format!("--window-size={},{}", window.0, window.1),
                    // Nothing but the servers of the test: no background requests to
                    // Google's services, and any other host fails here at once (a dead
                    // proxy; loopback is never proxied) instead of reaching a network.
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--no-pings",
                    "--disable-domain-reliability", "--disable-breakpad",
                    "--disable-client-side-phishing-detection",
                    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
                    "--proxy-server=http://127.0.0.1:9",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                ],
            }
        });
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("starting Chromium through chromedriver: {e}"));
        let shots = shots_dir(test);
        println!("screenshots of {test}: {}", shots.display());
        Self {
            client,
            driver,
            shots,
            taken: 0,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Saves the page as it is now: `NN-name.png`.
    pub async fn shot(&mut self, name: &str) -> PathBuf {
        self.taken += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no {css} on {}: {e}", self.url().await),
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Waits until the page's source contains `needle` (without reloading it).
    pub async fn wait_for_text(&self, needle: &str, deadline: Duration) {
        let found = super::eventually(deadline, || async {
            self.source().await.contains(needle).then_some(())
        })
        .await;
        if found.is_none() {
            panic!("{needle:?} never appeared on {}", self.url().await);
        }
    }

    /// Ends the browser session, then chromedriver and its Chromium.
    pub async fn quit(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group holds chromedriver and the Chromium it started; a test that panicked
        // leaves none of them behind. Only our own group: its id is chromedriver's pid, and
        // it is checked to still be one before the signal (killpg directly: the `kill`
        // command's reading of a negative pid after a signal name differs between versions).
        let Ok(pid) = libc::pid_t::try_from(self.driver.id()) else {
            return;
        };
        // SAFETY: getpgid and killpg only read their arguments.
        unsafe {
            if pid > 1 && libc::getpgid(pid) == pid {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}
