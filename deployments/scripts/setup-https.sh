#!/usr/bin/env bash
# Prepare a project directory for HTTPS with Traefik + Let's Encrypt (deployments/docker-compose.yml).
# Writes .env from configs/.env.example without clobbering values that are already set.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APP_UID_DEFAULT=10001

usage() {
    cat <<EOF
Usage: $PROG [options]

Prepare HTTPS for aiproxy behind Traefik + Let's Encrypt: choose the public host name, create .env
from configs/.env.example (existing values are kept), generate a client API key and the Traefik
dashboard password if none are set, and create logs/ and deployments/letsencrypt/.

Options:
  -s, --service NAME        nip.io (default), sslip.io or custom
  -d, --domain NAME         your own domain (implies --service custom); its A record must point here
  -n, --name LABEL          first label of the nip.io/sslip.io name (default: aiproxy)
      --ip ADDRESS          public IPv4 for nip.io/sslip.io (default: \$PUBLIC_IP, else detected online)
  -e, --email ADDRESS       Let's Encrypt account e-mail (required unless ACME_EMAIL is already set)
      --dashboard-user NAME Traefik dashboard user (default: admin)
      --dashboard-password P
                            set or replace the dashboard password (default: generated if none is set);
                            P = - reads it from standard input, which keeps it out of ps and shell history
      --staging             use the Let's Encrypt staging CA (untrusted test certificates, no rate limits)
      --dir PATH            project directory (default: the repository containing this script)
  -h, --help                show this help

What is written to .env:
  DOMAIN, ACME_EMAIL       only when given by an option above, or when unset / still the placeholder
  API_KEYS                 a new random key, only when empty
  TRAEFIK_DASHBOARD_AUTH   an htpasswd (apr1) line, only when empty or when --dashboard-password is given
  APP_UID, APP_GID         your uid/gid when you are not root and they are unset

Examples:
  $PROG -e you@your-mail.org                       # https://aiproxy.<public-ip>.nip.io
  $PROG -s sslip.io --ip 203.0.113.7 -e you@your-mail.org
  $PROG -d ai.your-company.com -e ops@your-company.com
Then: make up && deployments/scripts/test-https.sh
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
info() { echo "$PROG: $*"; }

# ---------------------------------------------------------------------------------------------------
# .env helpers. A value counts as "set" when it is non-empty and not one of the template placeholders.

PLACEHOLDER_DOMAINS=" aiproxy.example.com your-domain.com localhost "
PLACEHOLDER_EMAILS=" admin@example.com your-email@example.com "

# shellcheck source-path=SCRIPTDIR source=lib/dotenv.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dotenv.sh"

# Quote VALUE for .env: bare when it only has safe characters, else single quotes (literal for
# docker compose, python-dotenv and bash alike).
env_quote() {
    local value=$1
    if [[ $value =~ ^[A-Za-z0-9._@:/,+=-]*$ ]]; then
        printf '%s' "$value"
    elif [[ $value == *"'"* ]]; then
        die "value for .env contains a single quote, which cannot be quoted safely"
    else
        printf "'%s'" "$value"
    fi
}

# Set KEY=VALUE in FILE: replace the active assignment in place, else uncomment "# KEY=..." in place,
# else append. Other lines are left byte for byte.
env_set() {
    local key=$1 value=$2 file=$3 quoted tmp
    quoted=$(env_quote "$value")
    tmp=$(mktemp "$file.XXXXXX")
    ENV_KEY=$key ENV_LINE="$key=$quoted" awk '
        BEGIN { key = ENVIRON["ENV_KEY"]; newline = ENVIRON["ENV_LINE"]; active = 0 }
        { lines[NR] = $0 }
        {
            l = $0; sub(/^[ \t]+/, "", l); sub(/^export[ \t]+/, "", l)
            if (index(l, key "=") == 1) last_active = NR
            c = $0; sub(/^[ \t]*#[ \t]*/, "", c)
            if (c != $0 && index(c, key "=") == 1 && !first_comment) first_comment = NR
        }
        END {
            target = last_active ? last_active : first_comment
            for (i = 1; i <= NR; i++) print (i == target ? newline : lines[i])
            if (!target) print newline
        }' "$file" >"$tmp"
    chmod 600 "$tmp"
    chown --reference="$file" "$tmp" 2>/dev/null || true  # run with sudo, .env stays its owner's
    mv "$tmp" "$file"
}

is_placeholder() {
    local value=$1 list=$2
    [[ -z $value || $list == *" $value "* ]]
}

# ---------------------------------------------------------------------------------------------------
# Secrets and hashes (no apache2-utils needed).

random_hex() {  # N bytes of randomness as hex
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

random_password() {
    # 24 characters from a URL-safe alphabet
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 || true
}

# htpasswd-compatible Apache MD5 ($apr1$) hash of PASSWORD with SALT (8 chars from [./0-9A-Za-z]).
# openssl when it is there, else a pure-python implementation (python's crypt module is gone in 3.13).
# SETUP_HTPASSWD_TOOL=openssl|python forces one (the tests compare both).
apr1_hash() {
    local password=$1 salt=$2 tool=${SETUP_HTPASSWD_TOOL:-}
    if [[ -z $tool ]]; then
        if command -v openssl >/dev/null 2>&1 && openssl passwd -apr1 -salt "$salt" x >/dev/null 2>&1; then
            tool=openssl
        else
            tool=python
        fi
    fi
    case $tool in
        openssl) printf '%s\n' "$password" | openssl passwd -apr1 -salt "$salt" -stdin ;;
        python)
            command -v python3 >/dev/null 2>&1 || die "need openssl or python3 to hash the dashboard password"
            APR1_PASSWORD=$password APR1_SALT=$salt python3 - <<'PY'
import hashlib, os

def apr1(pw: bytes, salt: bytes) -> str:
    magic = b"$apr1$"
    ctx = pw + magic + salt
    alt = hashlib.md5(pw + salt + pw).digest()
    for i in range(len(pw), 0, -16):
        ctx += alt[: min(16, i)]
    i = len(pw)
    while i:
        ctx += b"\0" if i & 1 else pw[:1]
        i >>= 1
    final = hashlib.md5(ctx).digest()
    for i in range(1000):
        c = pw if i & 1 else final
        if i % 3:
            c += salt
        if i % 7:
            c += pw
        c += final if i & 1 else pw
        final = hashlib.md5(c).digest()
    itoa = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    out = ""
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        v = (final[a] << 16) | (final[b] << 8) | final[c]
        for _ in range(4):
            out += itoa[v & 0x3F]
            v >>= 6
    v = final[11]
    for _ in range(2):
        out += itoa[v & 0x3F]
        v >>= 6
    return "$apr1$" + salt.decode() + "$" + out

print(apr1(os.environ["APR1_PASSWORD"].encode(), os.environ["APR1_SALT"].encode()))
PY
            ;;
        *) die "SETUP_HTPASSWD_TOOL must be openssl or python" ;;
    esac
}

random_salt() {
    LC_ALL=C tr -dc './0-9A-Za-z' </dev/urandom | head -c 8 || true
}

# ---------------------------------------------------------------------------------------------------

detect_public_ip() {
    local url ip
    command -v curl >/dev/null 2>&1 || return 1
    for url in https://api.ipify.org https://ifconfig.me/ip https://icanhazip.com https://ipinfo.io/ip; do
        ip=$(curl -4 -fsS --max-time 5 "$url" 2>/dev/null | tr -d ' \r\n') || continue
        if valid_ipv4 "$ip"; then
            printf '%s\n' "$ip"
            return 0
        fi
    done
    return 1
}

valid_ipv4() {
    local ip=$1 part parts
    [[ $ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
    IFS=. read -r -a parts <<<"$ip"
    for part in "${parts[@]}"; do
        ((10#$part <= 255)) || return 1
    done
}

valid_domain() {
    [[ $1 =~ ^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$ ]]
}

valid_email() {
    [[ $1 =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ ]]
}

main() {
    local service="" domain="" name="aiproxy" ip="${PUBLIC_IP:-}" email="" dir=""
    local dash_user="admin" dash_password="" staging=0 explicit_domain=0

    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            -s | --service) service=${2:?--service needs a value}; explicit_domain=1; shift 2 ;;
            -d | --domain) domain=${2:?--domain needs a value}; explicit_domain=1; shift 2 ;;
            -n | --name) name=${2:?--name needs a value}; explicit_domain=1; shift 2 ;;
            --ip) ip=${2:?--ip needs a value}; explicit_domain=1; shift 2 ;;
            -e | --email) email=${2:?--email needs a value}; shift 2 ;;
            --dashboard-user) dash_user=${2:?--dashboard-user needs a value}; shift 2 ;;
            --dashboard-password) dash_password=${2:?--dashboard-password needs a value}; shift 2
                if [[ $dash_password == - ]]; then
                    IFS= read -r dash_password || true
                    [[ -n $dash_password ]] || die "--dashboard-password -: no password on standard input"
                fi
                ;;
            --staging) staging=1; shift ;;
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
    done

    [[ -n $dir ]] || dir=$(cd "$SCRIPT_DIR/../.." && pwd)
    [[ -d $dir ]] || die "project directory not found: $dir"
    dir=$(cd "$dir" && pwd)
    local env_file="$dir/.env" example="$dir/configs/.env.example"

    if [[ -z $service ]]; then
        if [[ -n $domain ]]; then service=custom; else service=nip.io; fi
    fi
    case $service in
        nip.io | sslip.io | custom) ;;
        *) die "--service must be nip.io, sslip.io or custom (got '$service')" ;;
    esac
    [[ $service != custom || -n $domain ]] || die "--service custom needs --domain"
    [[ $name =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "--name must be one DNS label (a-z, 0-9, -)"
    [[ $dash_user =~ ^[A-Za-z0-9._-]+$ ]] || die "--dashboard-user may only contain letters, digits, '.', '_' and '-'"

    # .env: start from the template when there is none; keep everything that exists.
    umask 077
    if [[ ! -f $env_file ]]; then
        if [[ -f $example ]]; then
            cp "$example" "$env_file"
            info "created .env from configs/.env.example"
        else
            : >"$env_file"
            info "created an empty .env (no configs/.env.example found)"
        fi
    fi
    chmod 600 "$env_file"

    # DOMAIN: from the options when given, else keep a real value, else derive the nip.io name.
    local current_domain
    current_domain=$(env_get DOMAIN "$env_file")
    if ((explicit_domain)) || is_placeholder "$current_domain" "$PLACEHOLDER_DOMAINS"; then
        if [[ $service != custom ]]; then
            if [[ -z $ip ]]; then
                info "detecting the public IPv4 address (use --ip to skip)..."
                ip=$(detect_public_ip) || die "could not detect the public IP; pass --ip ADDRESS"
            fi
            valid_ipv4 "$ip" || die "not an IPv4 address: $ip"
            domain="$name.$ip.$service"
        fi
        domain=$(printf '%s' "$domain" | tr '[:upper:]' '[:lower:]')
        valid_domain "$domain" || die "not a valid domain name: $domain"
        if [[ $domain != "$current_domain" ]]; then
            env_set DOMAIN "$domain" "$env_file"
            info "DOMAIN=$domain"
        fi
    else
        domain=$current_domain
        info "keeping DOMAIN=$domain"
    fi

    # ACME_EMAIL
    local current_email
    current_email=$(env_get ACME_EMAIL "$env_file")
    if [[ -n $email ]]; then
        valid_email "$email" || die "not a valid e-mail address: $email"
        if [[ $email != "$current_email" ]]; then
            env_set ACME_EMAIL "$email" "$env_file"
        fi
    elif is_placeholder "$current_email" "$PLACEHOLDER_EMAILS"; then
        die "Let's Encrypt needs an account e-mail: pass --email ADDRESS"
    else
        email=$current_email
    fi
    if ((staging)); then
        env_set ACME_CA_SERVER https://acme-staging-v02.api.letsencrypt.org/directory "$env_file"
        info "using the Let's Encrypt staging CA (certificates will not be trusted by clients)"
    fi

    # API_KEYS: one random client key when none is set.
    local api_key=""
    if [[ -z $(env_get API_KEYS "$env_file") ]]; then
        api_key="sk-aiproxy-$(random_hex 24)"
        env_set API_KEYS "$api_key" "$env_file"
    fi

    # TRAEFIK_DASHBOARD_AUTH: htpasswd line; the password is printed once and not stored anywhere.
    local generated_password=""
    if [[ -n $dash_password || -z $(env_get TRAEFIK_DASHBOARD_AUTH "$env_file") ]]; then
        if [[ -z $dash_password ]]; then
            dash_password=$(random_password)
            generated_password=$dash_password
        fi
        local hash
        hash=$(apr1_hash "$dash_password" "$(random_salt)")
        [[ $hash == "\$apr1\$"* ]] || die "could not hash the dashboard password"
        env_set TRAEFIK_DASHBOARD_AUTH "$dash_user:$hash" "$env_file"
    fi

    # Directories: logs/ must be writable by the container's non-root user; acme.json is secret.
    mkdir -p "$dir/logs" "$dir/deployments/letsencrypt"
    chmod 700 "$dir/deployments/letsencrypt"
    if ((EUID == 0)); then  # the user docker-compose.yml runs the gateway as
        local uid gid
        uid=$(env_get APP_UID "$env_file")
        gid=$(env_get APP_GID "$env_file")
        chown "${uid:-$APP_UID_DEFAULT}:${gid:-$APP_UID_DEFAULT}" "$dir/logs"
    elif [[ -z $(env_get APP_UID "$env_file") ]]; then
        env_set APP_UID "$(id -u)" "$env_file"
        env_set APP_GID "$(id -g)" "$env_file"
    fi

    local http_port
    http_port=$(env_get HTTP_PORT "$env_file")
    if [[ -n $http_port && $http_port != 80 ]]; then
        info "warning: HTTP_PORT=$http_port; Let's Encrypt HTTP-01 validation needs public port 80 forwarded to it"
    fi

    cat <<EOF

HTTPS setup written to $env_file
  API:        https://$domain/v1  (health: https://$domain/health)
  gRPC:       grpc.$domain:443
  Dashboard:  https://traefik.$domain/dashboard/
  E-mail:     $email
EOF
    if [[ -n $api_key ]]; then
        echo "  New client API key (API_KEYS): $api_key"
    fi
    if [[ -n $generated_password ]]; then
        echo "  Dashboard login: $dash_user / $generated_password   (shown once; only its hash is stored)"
    fi
    cat <<EOF

Next steps:
  1. Add provider keys to .env (OPENROUTER_API_KEY, GEMINI_API_KEY) if you use those models.
  2. Make sure ports 80 and 443 are open and $domain resolves to this server.
  3. make up                                   # build and start Traefik + aiproxy
  4. deployments/scripts/test-https.sh         # check redirect, certificate, health, auth
EOF
}

main "$@"
