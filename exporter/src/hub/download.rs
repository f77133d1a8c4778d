//! Getting one file into a snapshot: the HEAD that names its blob and size, then a resumable GET into
//! `blobs/<etag>.incomplete` with a progress bar, renamed to the blob once every byte arrived.

use super::cache::link;
use super::client::Hub;
use super::names::{check_file_name, encode_path, origin, safe_component};
use super::HubError;
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

impl Hub<'_> {
    /// `snapshots/<commit>/<file>`, downloading the blob unless the snapshot or another snapshot has it.
    pub(super) fn get(&self, commit: &str, file: &str) -> Result<PathBuf, HubError> {
        check_file_name(file).map_err(|e| HubError::BadResponse {
            url: self.list_url(),
            reason: e,
        })?;
        let pointer = self.repo_dir().join("snapshots").join(commit).join(file);
        if pointer.is_file() {
            return Ok(pointer);
        }
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.env.endpoint,
            self.repo,
            commit,
            encode_path(file)
        );
        let meta = self.metadata(&url, file)?;
        let blob = self.repo_dir().join("blobs").join(&meta.etag);
        if !blob.is_file() {
            let lock = self.lock(&meta.etag)?;
            if !blob.is_file() {
                let from = meta.location.as_deref().unwrap_or(&url);
                self.download(from, file, meta.size, &blob)?;
            }
            drop(lock);
        }
        link(&blob, &pointer, file)?;
        Ok(pointer)
    }

    /// HEAD on `resolve/`: the ETag names the blob, the size bounds the download, a redirect gives the CDN URL.
    /// Relative redirects (a renamed repository) are followed here, as huggingface_hub does.
    fn metadata(&self, url: &str, file: &str) -> Result<FileMeta, HubError> {
        let mut current = url.to_string();
        for _ in 0..10 {
            let req = self
                .auth(self.no_redirect.head(&current), &current)
                .header("Accept-Encoding", "identity");
            let resp = self.check(req.call(), &current, Some(file))?;
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let location = header("location");
            if resp.status().is_redirection() {
                if let Some(loc) = location.as_deref().filter(|l| l.starts_with('/')) {
                    current = format!("{}{loc}", origin(&current));
                    continue;
                }
            }
            let bad = |reason: &str| HubError::BadResponse {
                url: current.clone(),
                reason: reason.into(),
            };
            let etag = header("x-linked-etag")
                .or_else(|| header("etag"))
                .ok_or_else(|| bad("no ETag header"))?;
            let etag = etag
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string();
            if !safe_component(&etag) {
                return Err(bad(&format!("ETag {etag:?} is not a hash")));
            }
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .map(|s| s.trim().parse::<u64>())
                .transpose()
                .map_err(|_| bad("the size header is not a number"))?;
            let location = if resp.status().is_redirection() {
                Some(location.ok_or_else(|| bad("a redirect without Location"))?)
            } else {
                None
            };
            return Ok(FileMeta {
                etag,
                size,
                location,
            });
        }
        Err(HubError::BadResponse {
            url: url.into(),
            reason: "more than 10 redirects".into(),
        })
    }

    /// Downloads `url` into `blob` through `blob.incomplete`, resuming what an earlier run left there.
    fn download(
        &self,
        url: &str,
        file: &str,
        size: Option<u64>,
        blob: &Path,
    ) -> Result<(), HubError> {
        let mut part = OsString::from(blob.as_os_str());
        part.push(".incomplete");
        let part = PathBuf::from(part);
        let io = |source| HubError::Io {
            path: part.clone(),
            source,
        };
        fs::create_dir_all(part.parent().expect("blobs/ has a parent")).map_err(io)?;
        let mut start = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| start > s) {
            start = 0;
        }
        let mut req = self
            .auth(self.agent.get(url), url)
            .header("Accept-Encoding", "identity");
        if start > 0 {
            req = req.header("Range", format!("bytes={start}-"));
        }
        let resp = self.check(req.call(), url, Some(file))?;
        let status = resp.status().as_u16();
        // 206: the server continues where we stopped; 200: it sends everything, so start over.
        let resumed = status == 206
            && resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|r| r.starts_with(&format!("bytes {start}-")));
        if !resumed {
            start = 0;
            if status == 206 {
                return Err(HubError::BadResponse {
                    url: url.into(),
                    reason: "206 Partial Content for a range we did not ask for".into(),
                });
            }
        }
        let mut out = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .map_err(io)?;
        let bar = self.bar(file, size, start);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = start;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // What arrived stays in the .incomplete file for the next run.
                    bar.abandon();
                    return Err(HubError::Truncated {
                        url: url.into(),
                        got,
                        expected: size.map_or("?".into(), |s| s.to_string()),
                        cause: Some(e.to_string()),
                    });
                }
            };
            got += n as u64;
            if size.is_some_and(|s| got > s) {
                bar.abandon();
                return Err(HubError::BadResponse {
                    url: url.into(),
                    reason: format!("more than the announced {} bytes", size.unwrap_or(0)),
                });
            }
            out.write_all(&buf[..n]).map_err(io)?;
            bar.set_position(got);
        }
        out.sync_all().map_err(io)?;
        drop(out);
        if let Some(expected) = size.filter(|&s| got != s) {
            bar.abandon();
            return Err(HubError::Truncated {
                url: url.into(),
                got,
                expected: expected.to_string(),
                cause: None,
            });
        }
        bar.finish();
        fs::rename(&part, blob).map_err(|source| HubError::Io {
            path: blob.into(),
            source,
        })
    }

    fn bar(&self, file: &str, size: Option<u64>, start: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match size {
            Some(s) => ProgressBar::new(s),
            None => ProgressBar::no_length(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(file.to_string());
        bar.set_position(start);
        bar
    }
}

struct FileMeta {
    etag: String,
    size: Option<u64>,
    /// The CDN URL a redirect pointed to.
    location: Option<String>,
}
