#!/usr/bin/env bash
# Check a running HTTPS deployment of aiproxy end to end; exits non-zero when any check fails.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
Usage: $PROG [options]

Checks a deployment made with deployments/docker-compose.yml (or native TLS):
  1. http://DOMAIN/health redirects to https://
  2. the certificate for DOMAIN: issuer (default: Let's Encrypt) and days until expiry
  3. https://DOMAIN/health answers 200 {"status":"ok",...} with a Strict-Transport-Security header
  4. /v1/chat/completions refuses a request without a key (401) and answers one with a key (200)
  5. https://traefik.DOMAIN/dashboard/ asks for a password (401 + WWW-Authenticate: Basic)
  6. grpc.DOMAIN negotiates HTTP/2 (ALPN h2) over TLS with a valid certificate for that name
     (--grpc-host/--grpc-port for native TLS)
Every check prints PASS or FAIL; the exit status is 1 when any failed.

Options (defaults come from .env in the project directory):
      --dir PATH          project directory with .env (default: the repository containing this script)
      --domain NAME       host name to test (default: DOMAIN)
      --api-key KEY       client key for the chat call (default: the first of API_KEYS)
      --model NAME        model for the chat call (default: mock, the built-in provider)
      --http-port N       (default: HTTP_PORT or 80)
      --https-port N      (default: HTTPS_PORT or 443)
      --grpc-host NAME    gRPC host name (default: grpc.DOMAIN; with native TLS pass DOMAIN)
      --grpc-port N       gRPC port (default: the https port; with native TLS pass its GRPC_PORT, e.g. 50051)
      --connect-ip IP     connect to IP instead of resolving DOMAIN (before DNS is ready)
      --ca-file PEM       trust this CA bundle instead of the system one
      --insecure          skip certificate verification (automatic with the staging CA)
      --issuer TEXT       expected text in the certificate issuer (default: "Let's Encrypt")
      --min-days N        fail when the certificate expires within N days (default: 14)
      --skip NAMES        comma-separated checks to skip: redirect,cert,health,chat,dashboard,grpc
      --timeout SECONDS   per request (default: 20)
  -h, --help              show this help
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 2; }

# shellcheck source-path=SCRIPTDIR source=lib/dotenv.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dotenv.sh"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }
skipped() { [[ ,$SKIP, == *",$1,"* ]]; }

# URL for HOST on the http or https port, with the port only when it is not the default.
url_for() {
    local scheme=$1 host=$2 path=$3
    if [[ $scheme == http && $HTTP_PORT == 80 ]] || [[ $scheme == https && $HTTPS_PORT == 443 ]]; then
        printf '%s://%s%s' "$scheme" "$host" "$path"
    elif [[ $scheme == http ]]; then
        printf '%s://%s:%s%s' "$scheme" "$host" "$HTTP_PORT" "$path"
    else
        printf '%s://%s:%s%s' "$scheme" "$host" "$HTTPS_PORT" "$path"
    fi
}

# The last line curl wrote to stderr, without the "curl: " prefix.
curl_error() {
    local line
    line=$(tail -n 1 "$ERR_FILE")
    printf '%s' "${line#curl: }"
}

# curl with the common options; prints what -w asks for.
curl_() {
    curl --silent --show-error --http1.1 --max-time "$TIMEOUT" "${CURL_OPTS[@]}" "$@"
}

# The server certificate (PEM) that HOST presents on the https port.
fetch_cert() {
    local host=$1
    openssl s_client -connect "$CONNECT_HOST:$HTTPS_PORT" -servername "$host" </dev/null 2>/dev/null |
        openssl x509 2>/dev/null
}

check_redirect() {
    local url out code location
    url=$(url_for http "$DOMAIN" /health)
    if ! out=$(curl_ -o /dev/null -w '%{http_code} %{redirect_url}' "$url" 2>"$ERR_FILE"); then
        fail "redirect: $url: $(curl_error)"
        return
    fi
    code=${out%% *}
    location=${out#* }
    if [[ $code =~ ^30[1278]$ && $location == "https://$DOMAIN"* ]]; then
        pass "redirect: $url -> $code $location"
    else
        fail "redirect: $url answered $code ${location:-(no Location)}; expected a 301/308 to https://$DOMAIN"
    fi
}

check_cert() {
    local pem issuer enddate
    pem=$(fetch_cert "$DOMAIN") || true
    if [[ -z $pem ]]; then
        fail "certificate: no TLS handshake with $CONNECT_HOST:$HTTPS_PORT (SNI $DOMAIN)"
        return
    fi
    issuer=$(openssl x509 -noout -issuer <<<"$pem")
    enddate=$(openssl x509 -noout -enddate <<<"$pem")
    enddate=${enddate#notAfter=}
    if [[ $issuer == *"$ISSUER"* ]]; then
        pass "certificate issuer: ${issuer#issuer=}"
    else
        fail "certificate issuer: ${issuer#issuer=} (expected \"$ISSUER\"; TRAEFIK DEFAULT CERT means ACME failed: make logs)"
    fi
    if openssl x509 -noout -checkend $((MIN_DAYS * 86400)) <<<"$pem" >/dev/null; then
        pass "certificate expiry: $enddate (more than $MIN_DAYS days left)"
    else
        fail "certificate expiry: $enddate (less than $MIN_DAYS days left)"
    fi
}

check_health() {
    local url headers body code
    url=$(url_for https "$DOMAIN" /health)
    headers=$(mktemp)
    if ! body=$(curl_ -D "$headers" -w '\n%{http_code}' "$url" 2>"$ERR_FILE"); then
        fail "health: $url: $(curl_error)"
        rm -f "$headers"
        return
    fi
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    if [[ $code == 200 && $body =~ \"status\"[[:space:]]*:[[:space:]]*\"ok\" ]]; then
        pass "health: $url -> 200 $body"
    else
        fail "health: $url -> $code $body"
    fi
    if grep -qi '^strict-transport-security:' "$headers"; then
        pass "HSTS: $(grep -i '^strict-transport-security:' "$headers" | tr -d '\r')"
    else
        fail "HSTS: no Strict-Transport-Security header on $url"
    fi
    rm -f "$headers"
}

check_chat() {
    local url payload out code
    url=$(url_for https "$DOMAIN" /v1/chat/completions)
    payload=$(printf '{"model":"%s","messages":[{"role":"user","content":"test-https.sh ping"}],"max_tokens":8}' "$MODEL")
    if ! out=$(curl_ -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$payload" "$url" 2>"$ERR_FILE"); then
        fail "auth: $url: $(curl_error)"
        return
    fi
    if [[ $out == 401 ]]; then
        pass "auth: a chat call without a key is refused (401)"
    else
        fail "auth: a chat call without a key answered $out (expected 401)"
    fi
    if [[ -z $API_KEY ]]; then
        fail "chat: no API key (set API_KEYS in .env or pass --api-key)"
        return
    fi
    if ! out=$(curl_ -w '\n%{http_code}' -H 'Content-Type: application/json' \
        -H @<(printf 'Authorization: Bearer %s\n' "$API_KEY") -d "$payload" "$url" 2>"$ERR_FILE"); then
        fail "chat: $url: $(curl_error)"
        return
    fi
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [[ $code == 200 && $out == *'"choices"'* ]]; then
        pass "chat: model $MODEL answered 200"
    else
        fail "chat: model $MODEL answered $code ${out:0:300}"
    fi
}

check_dashboard() {
    local url headers out
    url=$(url_for https "traefik.$DOMAIN" /dashboard/)
    headers=$(mktemp)
    if ! out=$(curl_ -o /dev/null -D "$headers" -w '%{http_code}' "$url" 2>"$ERR_FILE"); then
        fail "dashboard: $url: $(curl_error)"
        rm -f "$headers"
        return
    fi
    if [[ $out == 401 ]] && grep -qi '^www-authenticate: *basic' "$headers"; then
        pass "dashboard: $url asks for a password (401 Basic)"
    else
        fail "dashboard: $url answered $out without a Basic auth challenge; it must not be public"
    fi
    rm -f "$headers"
}

check_grpc() {
    local out connect=$GRPC_HOST
    [[ -z $CONNECT_IP ]] || connect=$CONNECT_IP
    out=$(openssl s_client -connect "$connect:$GRPC_PORT" -servername "$GRPC_HOST" -alpn h2 \
        -verify_hostname "$GRPC_HOST" "${CA_OPTS[@]}" </dev/null 2>/dev/null) || true
    if [[ $out != *"ALPN protocol: h2"* ]]; then
        fail "gRPC: $GRPC_HOST:$GRPC_PORT did not negotiate h2 (no TLS or no HTTP/2)"
    elif ((INSECURE == 0)) && [[ $out != *"Verify return code: 0 (ok)"* ]]; then
        # gRPC clients verify it: e.g. Traefik's default certificate after an ACME failure for this name.
        [[ $out =~ Verify\ return\ code:\ [^$'\n']* ]] || true
        fail "gRPC: $GRPC_HOST:$GRPC_PORT certificate not accepted (${BASH_REMATCH[0]:-no certificate})"
    else
        pass "gRPC: $GRPC_HOST:$GRPC_PORT negotiates HTTP/2 over TLS"
    fi
}

main() {
    local dir="" domain="" api_key="" http_port="" https_port="" grpc_host="" grpc_port="" ca_file="" insecure=0
    MODEL=mock ISSUER="Let's Encrypt" MIN_DAYS=14 SKIP="" TIMEOUT=20 CONNECT_IP=""
    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            --domain) domain=${2:?--domain needs a value}; shift 2 ;;
            --api-key) api_key=${2:?--api-key needs a value}; shift 2 ;;
            --model) MODEL=${2:?--model needs a value}; shift 2 ;;
            --http-port) http_port=${2:?--http-port needs a value}; shift 2 ;;
            --https-port) https_port=${2:?--https-port needs a value}; shift 2 ;;
            --grpc-host) grpc_host=${2:?--grpc-host needs a value}; shift 2 ;;
            --grpc-port) grpc_port=${2:?--grpc-port needs a value}; shift 2 ;;
            --connect-ip) CONNECT_IP=${2:?--connect-ip needs a value}; shift 2 ;;
            --ca-file) ca_file=${2:?--ca-file needs a value}; shift 2 ;;
            --insecure) insecure=1; shift ;;
            --issuer) ISSUER=${2:?--issuer needs a value}; shift 2 ;;
            --min-days) MIN_DAYS=${2:?--min-days needs a value}; shift 2 ;;
            --skip) SKIP=${2:?--skip needs a value}; shift 2 ;;
            --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
    done
    for tool in curl openssl; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
    done

    [[ -n $dir ]] || dir=$(cd "$SCRIPT_DIR/../.." && pwd)
    local env_file="$dir/.env"
    DOMAIN=${domain:-$(env_get DOMAIN "$env_file")}
    [[ -n $DOMAIN ]] || die "no domain: pass --domain or set DOMAIN in $env_file"
    if [[ -z $api_key ]]; then
        api_key=$(env_get API_KEYS "$env_file")
        api_key=${api_key%%,*}
        api_key=$(printf '%s' "$api_key" | tr -d ' "'\''')
    fi
    API_KEY=$api_key
    HTTP_PORT=${http_port:-$(env_get HTTP_PORT "$env_file")}
    HTTP_PORT=${HTTP_PORT:-80}
    HTTPS_PORT=${https_port:-$(env_get HTTPS_PORT "$env_file")}
    HTTPS_PORT=${HTTPS_PORT:-443}
    GRPC_HOST=${grpc_host:-grpc.$DOMAIN}
    GRPC_PORT=${grpc_port:-$HTTPS_PORT}
    [[ $HTTP_PORT =~ ^[0-9]+$ && $HTTPS_PORT =~ ^[0-9]+$ && $GRPC_PORT =~ ^[0-9]+$ && $MIN_DAYS =~ ^[0-9]+$ ]] ||
        die "ports and --min-days must be numbers"
    if [[ $(env_get ACME_CA_SERVER "$env_file") == *staging* && -z $ca_file ]]; then
        echo "note: staging CA in .env: certificates are not trusted, verification is skipped"
        insecure=1
    fi

    ERR_FILE=$(mktemp)
    trap 'rm -f "$ERR_FILE"' EXIT
    CURL_OPTS=()
    CONNECT_HOST=$DOMAIN
    if [[ -n $CONNECT_IP ]]; then
        CONNECT_HOST=$CONNECT_IP
        local host port
        for host in "$DOMAIN" "traefik.$DOMAIN"; do
            for port in "$HTTP_PORT" "$HTTPS_PORT"; do
                CURL_OPTS+=(--resolve "$host:$port:$CONNECT_IP")
            done
        done
    fi
    CA_OPTS=()  # openssl's
    [[ -z $ca_file ]] || { CURL_OPTS+=(--cacert "$ca_file"); CA_OPTS=(-CAfile "$ca_file"); }
    ((insecure == 0)) || CURL_OPTS+=(--insecure)
    INSECURE=$insecure

    echo "Testing https://$DOMAIN (http port $HTTP_PORT, https port $HTTPS_PORT${CONNECT_IP:+, via $CONNECT_IP})"
    skipped redirect || check_redirect
    skipped cert || check_cert
    skipped health || check_health
    skipped chat || check_chat
    skipped dashboard || check_dashboard
    skipped grpc || check_grpc
    echo "test-https: $PASSED checks passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
