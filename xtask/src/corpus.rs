//! The detection corpus's image: nginx, Apache httpd, Redis, PostgreSQL and a Python WSGI app
//! from Debian bookworm's packages (`debootstrap --variant=minbase` with them included), with
//! the entrypoints and settings a containerised server has, packed with umoci and cached.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::images::pack;
use crate::procs;

pub const CORPUS_REF: &str = "localhost/palisade-test/corpus:1";
const TAG: &str = "1";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// The servers, and what the chain's steps use (kmod for insmod and lsmod).
const PACKAGES: &[&str] = &[
    "nginx-light",
    "apache2",
    "redis-server",
    "postgresql",
    "python3",
    "kmod",
];

/// Bump when the files below or the build change, to rebuild the cached image.
const RECIPE: &str = "corpus-v2";

/// The WSGI app: pages, a form post that stores a row in sqlite, a health check.
const APP: &str = r#"# The detection corpus's Python web app: wsgiref and sqlite3 from the standard library.
import signal
import sqlite3
import sys
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server, WSGIRequestHandler

DB = "/var/lib/app/app.db"


def db():
    c = sqlite3.connect(DB)
    c.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
    return c


def app(environ, respond):
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if path == "/health":
        body = b"ok\n"
    elif path == "/items" and method == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        with db() as c:
            c.execute("INSERT INTO items (name) VALUES (?)", (form.get("name", ["?"])[0],))
        body = b"stored\n"
    elif path == "/items":
        with db() as c:
            rows = c.execute("SELECT name FROM items ORDER BY id DESC LIMIT 20").fetchall()
        body = "\n".join(r[0] for r in rows).encode() + b"\n"
    elif path == "/":
        body = b"<html><body><h1>corpus shop</h1></body></html>\n"
    else:
        respond("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    respond("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Quiet(WSGIRequestHandler):
    def log_request(self, *args):
        pass


if __name__ == "__main__":
    # pid 1 gets no default action for SIGTERM: exit on it, as the stop asks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    make_server("0.0.0.0", 8000, app, handler_class=Quiet).serve_forever()
"#;

/// Apache as the official image starts it: the environment, its run directories, then
/// `exec` so that the server is pid 1 and gets the stop signal.
const APACHE_START: &str = "#!/bin/sh\nset -e\n. /etc/apache2/envvars\n\
mkdir -p \"$APACHE_RUN_DIR\" \"$APACHE_LOCK_DIR\" \"$APACHE_LOG_DIR\"\n\
rm -f \"$APACHE_PID_FILE\"\nexec apache2 -DFOREGROUND\n";

/// Redis under its own user, as the official image's entrypoint drops to it.
const REDIS_START: &str = "#!/bin/sh\nexec setpriv --reuid=redis --regid=redis --init-groups \
redis-server --bind 0.0.0.0 --protected-mode no --dir /var/lib/redis\n";

/// The cached image archive under `cache`, built when missing or when its recipe changed.
pub fn image(cache: &Path) -> Result<PathBuf> {
    fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let out = cache.join("corpus.tar");
    let key = format!("{RECIPE} {SUITE} {}", PACKAGES.join(","));
    let key_file = cache.join("corpus.key");
    if fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) && out.is_file() {
        return Ok(out);
    }
    let _ = fs::remove_file(&key_file);
    eprintln!(
        "xtask: building the corpus image ({SUITE}: {})",
        PACKAGES.join(" ")
    );
    let work = cache.join("corpus-build");
    let debs = cache.join("corpus-debs");
    fs::create_dir_all(&debs)?;
    let built = build(&work, &debs, &out);
    // debootstrap mounts /proc and /sys in the tree; a failed run can leave them behind.
    unmount_below(&work);
    let _ = fs::remove_dir_all(&work);
    built?;
    fs::write(&key_file, key)?;
    Ok(out)
}

fn build(work: &Path, debs: &Path, out: &Path) -> Result<()> {
    unmount_below(work);
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work)?;
    pack(
        work,
        "corpus",
        TAG,
        out,
        &[
            "--config.env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--config.cmd",
            "/bin/sh",
        ],
        |rootfs| {
            procs::run(
                Command::new("debootstrap")
                    .arg("--variant=minbase")
                    .arg(format!("--include={}", PACKAGES.join(",")))
                    .arg(format!("--cache-dir={}", debs.display()))
                    .arg(SUITE)
                    .arg(rootfs)
                    .arg(MIRROR),
            )
            .context("debootstrap the corpus root")?;
            unmount_below(rootfs);
            configure(rootfs)
        },
    )
}

/// The entrypoints, the app, PostgreSQL open to the pod network, and no package caches.
fn configure(root: &Path) -> Result<()> {
    let bin = root.join("usr/local/bin");
    fs::create_dir_all(&bin)?;
    let pg = postgres_version(root)?;
    let pg_start = format!(
        "#!/bin/sh\nset -e\nmkdir -p /run/postgresql\nchown postgres:postgres /run/postgresql\n\
         exec setpriv --reuid=postgres --regid=postgres --init-groups \
         /usr/lib/postgresql/{pg}/bin/postgres -D /var/lib/postgresql/{pg}/main \
         -c config_file=/etc/postgresql/{pg}/main/postgresql.conf -c listen_addresses=*\n"
    );
    for (name, text) in [
        ("corpus-apache2", APACHE_START),
        ("corpus-redis", REDIS_START),
        ("corpus-postgres", pg_start.as_str()),
    ] {
        let p = bin.join(name);
        fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
    }
    let hba = root.join(format!("etc/postgresql/{pg}/main/pg_hba.conf"));
    let mut rules = fs::read_to_string(&hba).with_context(|| format!("read {}", hba.display()))?;
    rules += "\n# the corpus's traffic generator, from the host\nhost all all 0.0.0.0/0 trust\n";
    fs::write(&hba, rules)?;
    let app = root.join("srv/app");
    fs::create_dir_all(&app)?;
    fs::write(app.join("app.py"), APP)?;
    fs::create_dir_all(root.join("var/lib/app"))?;
    for d in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let p = root.join(d);
        if p.is_dir() {
            fs::remove_dir_all(&p).with_context(|| format!("remove {}", p.display()))?;
            fs::create_dir_all(&p)?;
        }
    }
    Ok(())
}

/// The one PostgreSQL major version under /usr/lib/postgresql.
fn postgres_version(root: &Path) -> Result<String> {
    let dir = root.join("usr/lib/postgresql");
    let versions: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match versions.as_slice() {
        [v] => Ok(v.clone()),
        _ => bail!("{}: want one version, found {versions:?}", dir.display()),
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first (from /proc/self/mountinfo).
fn unmount_below(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("xtask: unmount {}: {e}", p.display());
        }
    }
}
