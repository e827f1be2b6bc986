#!/usr/bin/env bash
# The gate's detection table (docs/gate.md): the gate-eval corpus of two services learned
# through the gate and then sent in block mode, and the same test traffic through OWASP CRS
# (Debian's modsecurity-crs, paranoia level 1) in ModSecurity, with Apache as a reverse proxy
# on loopback in front of the same upstream.
#
#   gate/eval.sh [--short] [--seed N]
#
# Installs apache2, libapache2-mod-security2 and modsecurity-crs with apt-get when missing.
# Apache runs from a temporary configuration on 127.0.0.1:$CRS_PORT (default 18481) with the
# upstream on 127.0.0.1:$UPSTREAM_PORT (default 18482); it is stopped by its PID and the
# temporary directory removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

CRS_PORT=${CRS_PORT:-18481}
UPSTREAM_PORT=${UPSTREAM_PORT:-18482}
MODULES=/usr/lib/apache2/modules

if ! dpkg-query -W -f='${Status}\n' apache2 libapache2-mod-security2 modsecurity-crs 2>/dev/null \
    | grep -c 'install ok installed' | grep -qx 3; then
    echo "eval: installing apache2, libapache2-mod-security2, modsecurity-crs" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        apache2 libapache2-mod-security2 modsecurity-crs >&2
fi

cargo build --release -q -p palisade-gate --example gate-eval
eval_bin=${CARGO_TARGET_DIR:-target}/release/examples/gate-eval

tmp=$(mktemp -d /tmp/gate-eval.XXXXXX)
apache_pid=
cleanup() {
    if [ -n "$apache_pid" ] && kill -0 "$apache_pid" 2>/dev/null; then
        kill "$apache_pid"
        for _ in $(seq 50); do
            kill -0 "$apache_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$apache_pid" 2>/dev/null && kill -KILL "$apache_pid"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/data"
chown www-data:www-data "$tmp/data"
cp /etc/modsecurity/unicode.mapping "$tmp/"
sed -e 's/^SecRuleEngine .*/SecRuleEngine On/' \
    -e 's/^SecAuditEngine .*/SecAuditEngine Off/' \
    -e "s|^SecAuditLog .*|SecAuditLog $tmp/data/audit.log|" \
    -e "s|^SecTmpDir .*|SecTmpDir $tmp/data|" \
    -e "s|^SecDataDir .*|SecDataDir $tmp/data|" \
    -e "s|^SecUnicodeMapFile .*|SecUnicodeMapFile $tmp/unicode.mapping 20127|" \
    /etc/modsecurity/modsecurity.conf-recommended >"$tmp/modsecurity.conf"

cat >"$tmp/httpd.conf" <<EOF
ServerRoot "$tmp"
ServerName localhost
Listen 127.0.0.1:$CRS_PORT
PidFile $tmp/httpd.pid
DefaultRuntimeDir $tmp
Mutex file:$tmp default
ErrorLog $tmp/error.log
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module $MODULES/mod_mpm_event.so
LoadModule authz_core_module $MODULES/mod_authz_core.so
LoadModule unique_id_module $MODULES/mod_unique_id.so
LoadModule security2_module $MODULES/mod_security2.so
LoadModule proxy_module $MODULES/mod_proxy.so
LoadModule proxy_http_module $MODULES/mod_proxy_http.so
KeepAlive On
MaxKeepAliveRequests 0
Include $tmp/modsecurity.conf
# The shop updates profiles with PUT: allowed, as its operator would configure CRS.
SecAction "id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT'"
Include /usr/share/modsecurity-crs/owasp-crs.load
ProxyPass / http://127.0.0.1:$UPSTREAM_PORT/
EOF

/usr/sbin/apache2 -f "$tmp/httpd.conf" -DFOREGROUND &
apache_pid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$CRS_PORT") 2>/dev/null; then
        break
    fi
    kill -0 "$apache_pid" 2>/dev/null || { cat "$tmp/error.log" >&2; exit 1; }
    sleep 0.1
done

echo "# $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "CRS $(dpkg-query -W -f='${Version}' modsecurity-crs) paranoia level 1" >&2
"$eval_bin" "$@" --crs "127.0.0.1:$CRS_PORT" --upstream "127.0.0.1:$UPSTREAM_PORT"
