#!/usr/bin/env bash
# Deploy this working tree to a server running deployments/docker-compose.yml, with a backup before
# every deploy, a health-verified switch, automatic rollback when the new version is not healthy, and
# manual --rollback / --list-backups.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
Usage: DEPLOY_HOST=user@server $PROG [action]

Actions:
  (none)                   deploy: back up the server's copy, rsync this tree, build the image while
                           the old container keeps serving, switch, wait until healthy through Traefik;
                           an unhealthy switch rolls back automatically
  --rollback [BACKUP]      restore the newest backup (or the named one) and restart from its image
  --restore-backup BACKUP  same as --rollback BACKUP
  --list-backups           list the backups on the server, newest first
  -h, --help               show this help

Environment:
  DEPLOY_HOST              ssh target, e.g. deploy@203.0.113.7 (required)
  DEPLOY_PATH              directory on the server (default: /opt/aiproxy)
  DEPLOY_SSH_PORT          ssh port (default: 22)
  DEPLOY_SSH_OPTS          extra ssh options, e.g. "-i ~/.ssh/deploy_key"
  DEPLOY_KEEP_BACKUPS      backups to keep, older ones are deleted (default: 5)
  DEPLOY_HEALTH_TIMEOUT    seconds to wait for the new version to become healthy (default: 180)
  DEPLOY_SOURCE            local tree to deploy (default: the repository containing this script)
  ACME_EMAIL               first deploy only: when the server has no .env, run setup-https.sh there
                           with this e-mail (nip.io name from the server's public IP)
  DEPLOY_ENV_FILE          first deploy only: upload this file as the server's .env instead

Backups are backups/aiproxy-<UTC time>.tar.gz on the server (the tree without logs/ and backups/,
including .env and the certificates, mode 600) plus the image that was running, tagged
aiproxy:backup-<UTC time>. A rollback restores the files (but keeps the current .env and
certificates) and that image, so it needs no rebuild and no network.

The server needs Docker with the compose plugin (or docker-compose), rsync, tar and curl; this
script does not install them.
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------------
# The part that runs on the server: `bash -s -- DEPLOY_PATH ACTION [ARGS]` reads it from stdin.
read -r -d '' REMOTE_LIB <<'REMOTE' || true
set -euo pipefail
# env_get KEY [FILE]: from lib/dotenv.sh, sent ahead of this part
DEPLOY_PATH=$1; ACTION=$2; shift 2

# Files a deploy owns; everything else on the server (secrets, certificates, data) is left alone.
SYNC_EXCLUDES=(--exclude=/.env --exclude=/logs/ --exclude=/backups/ --exclude=/bundles/
    --exclude=/deployments/letsencrypt/ --exclude=/.git/ --exclude=/.venv/)

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f deployments/docker-compose.yml --env-file .env "$@"
    else
        docker-compose -f deployments/docker-compose.yml --env-file .env "$@"
    fi
}

# Backup file names, newest first (names sort by their UTC time stamp).
backups_newest_first() {
    local all i
    shopt -s nullglob
    all=("$DEPLOY_PATH"/backups/aiproxy-*.tar.gz)
    shopt -u nullglob
    for ((i = ${#all[@]} - 1; i >= 0; i--)); do
        echo "${all[i]##*/}"
    done
}

app_image() { local i; i=$(env_get AIPROXY_IMAGE); echo "${i:-aiproxy:latest}"; }

# Delete BACKUP and its image tag (the image stays while a container or another tag uses it).
remove_backup() {
    local f=$1 ts
    ts=${f#aiproxy-}; ts=${ts%.tar.gz}
    rm -f -- "backups/$f"
    docker image rm "aiproxy:backup-$ts" >/dev/null 2>&1 || true
}

# Restore the tree from BACKUP (keeping the current .env and certificates) and its image tag.
# Prints "image" when the backed-up image was re-tagged, "build" when a rebuild is needed.
restore_files() {
    local backup=$1 tmp ts
    [[ -f backups/$backup ]] || { echo "no such backup: $backup" >&2; exit 1; }
    tmp=$(mktemp -d)
    tar -xzf "backups/$backup" -C "$tmp"
    rsync -a --checksum --delete "${SYNC_EXCLUDES[@]}" "$tmp/" ./
    rm -rf "$tmp"
    ts=${backup#aiproxy-}; ts=${ts%.tar.gz}
    if docker image inspect "aiproxy:backup-$ts" >/dev/null 2>&1; then
        docker tag "aiproxy:backup-$ts" "$(app_image)"
        echo image
    else
        echo build
    fi
}

verify() {
    local timeout=$1 deadline cid status domain port body
    deadline=$((SECONDS + timeout))
    domain=$(env_get DOMAIN); port=$(env_get HTTPS_PORT); port=${port:-443}
    while ((SECONDS < deadline)); do
        cid=$(compose ps -q aiproxy 2>/dev/null || true)
        status=""
        if [[ -n $cid ]]; then
            status=$(docker inspect -f "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}" "$cid" 2>/dev/null || true)
        fi
        if [[ $status == healthy ]]; then
            # The container is healthy; now the same request through Traefik (certificate not checked:
            # a first deploy may still be waiting for Let's Encrypt; test-https.sh checks it).
            if ! command -v curl >/dev/null 2>&1 || [[ -z $domain ]]; then
                echo "healthy (container health check; no route check without curl and DOMAIN)"
                return 0
            fi
            body=$(curl -ksS --max-time 5 --resolve "$domain:$port:127.0.0.1" "https://$domain:$port/health" 2>/dev/null || true)
            if [[ $body =~ \"status\"[[:space:]]*:[[:space:]]*\"ok\" ]]; then
                echo "healthy: https://$domain/health -> $body"
                return 0
            fi
        elif [[ $status == unhealthy || $status == exited || $status == dead ]]; then
            echo "aiproxy container is $status" >&2
            compose logs --tail=40 aiproxy >&2 || true
            return 1
        fi
        sleep 3
    done
    echo "not healthy after ${timeout}s (container: ${status:-not running})" >&2
    compose logs --tail=40 aiproxy >&2 || true
    return 1
}

case $ACTION in
    prereq)
        missing=()
        for tool in docker rsync tar curl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
        if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
            missing+=("docker-compose-plugin")
        fi
        if ((${#missing[@]})); then echo "missing on the server: ${missing[*]}" >&2; exit 1; fi
        mkdir -p "$DEPLOY_PATH/backups"
        chmod 700 "$DEPLOY_PATH/backups"
        if [[ -f $DEPLOY_PATH/.env ]]; then echo "env=yes"; else echo "env=no"; fi
        ;;
    backup)
        ts=$1; cd "$DEPLOY_PATH"
        if [[ ! -f deployments/docker-compose.yml ]]; then echo "backup=none"; exit 0; fi
        excludes=(--exclude=./backups --exclude=./logs --exclude=./bundles)
        if [[ -e deployments/letsencrypt/acme.json && ! -r deployments/letsencrypt/acme.json ]]; then
            echo "note: deployments/letsencrypt/acme.json is not readable by $(id -un); not in the backup" >&2
            excludes+=(--exclude=./deployments/letsencrypt)
        fi
        (umask 077 && tar -czf "backups/aiproxy-$ts.tar.gz" "${excludes[@]}" .)
        cid=$(compose ps -q aiproxy 2>/dev/null || true)
        if [[ -n $cid ]]; then
            docker tag "$(docker inspect -f "{{.Image}}" "$cid")" "aiproxy:backup-$ts"
        fi
        echo "backup=aiproxy-$ts.tar.gz"
        ;;
    setup-env)
        cd "$DEPLOY_PATH"
        deployments/scripts/setup-https.sh --dir "$DEPLOY_PATH" --email "$1"
        ;;
    build)
        cd "$DEPLOY_PATH"
        compose pull --quiet traefik || echo "warning: could not pull the traefik image; using the local one" >&2
        compose build aiproxy
        ;;
    switch)
        cd "$DEPLOY_PATH"
        compose up -d --remove-orphans
        ;;
    verify)
        cd "$DEPLOY_PATH"
        verify "$1"
        ;;
    restore)
        cd "$DEPLOY_PATH"
        backup=$1
        if [[ $backup == latest ]]; then
            backup=$(backups_newest_first | head -n 1)
            [[ -n $backup ]] || { echo "no backups in $DEPLOY_PATH/backups" >&2; exit 1; }
        fi
        echo "restoring $backup"
        how=$(restore_files "$backup")
        if [[ $how == image ]]; then compose up -d --no-build --remove-orphans; else compose up -d --build --remove-orphans; fi
        ;;
    restore-files)
        # After a failed build: put the files back; the old container never stopped.
        cd "$DEPLOY_PATH"
        restore_files "$1" >/dev/null
        ;;
    list)
        cd "$DEPLOY_PATH"
        found=0
        while IFS= read -r f; do
            found=1
            ts=${f#aiproxy-}; ts=${ts%.tar.gz}
            img="no image"
            if docker image inspect "aiproxy:backup-$ts" >/dev/null 2>&1; then img="image aiproxy:backup-$ts"; fi
            printf "%s  %8s  %s\n" "$f" "$(du -h "backups/$f" | cut -f1)" "$img"
        done < <(backups_newest_first)
        ((found)) || echo "no backups in $DEPLOY_PATH/backups"
        ;;
    prune)
        keep=$1; cd "$DEPLOY_PATH"
        backups_newest_first | tail -n +$((keep + 1)) | while IFS= read -r f; do
            remove_backup "$f"
            echo "removed old backup $f"
        done
        ;;
    drop)
        # After a deploy undone from BACKUP: what runs is that backup, so it would only make the next
        # --rollback restore the running version (and push an older one out of the kept N).
        cd "$DEPLOY_PATH"
        remove_backup "$1"
        ;;
    *) echo "unknown remote action: $ACTION" >&2; exit 2 ;;
esac
REMOTE

SSH_CMD=()

remote() {
    local args
    args=$(printf '%q ' "$DEPLOY_PATH" "$@")
    # The server gets the shared .env reader (lib/dotenv.sh) followed by the remote part.
    "${SSH_CMD[@]}" "$DEPLOY_HOST" "bash -s -- $args" <<<"$(cat "$SCRIPT_DIR/lib/dotenv.sh")
$REMOTE_LIB"
}

deploy() {
    local ts out has_env backup source
    ts=$(date -u +%Y%m%d-%H%M%S)
    source=${DEPLOY_SOURCE:-$(cd "$SCRIPT_DIR/../.." && pwd)}
    [[ -f $source/deployments/docker-compose.yml ]] || die "not an aiproxy tree: $source"

    step "Checking $DEPLOY_HOST:$DEPLOY_PATH"
    out=$(remote prereq) || die "server prerequisites failed (see above)"
    has_env=${out##*env=}

    step "Backing up the current deployment"
    out=$(remote backup "$ts") || die "backup failed; nothing was changed"
    backup=${out##*backup=}
    if [[ $backup == none ]]; then
        echo "first deploy: nothing to back up"
        backup=""
    else
        echo "backup: $DEPLOY_PATH/backups/$backup"
    fi
    trap 'on_error "$backup"' ERR

    step "Copying files (rsync)"
    # --checksum: compare contents, not size+mtime (a same-size edit within one second is not missed).
    # No .env-like file travels (e.g. the DEPLOY_ENV_FILE=prod.env of docs/https.md): secrets reach the server
    # only as its .env, mode 600, never as a copy with this tree's permissions in the tree and its backups.
    rsync -az --checksum --delete -e "${SSH_CMD[*]}" \
        --include=/configs/.env.example --exclude=.env --exclude='.env.*' --exclude='*.env' --exclude=/logs/ --exclude=/backups/ --exclude=/bundles/ \
        --exclude=/deployments/letsencrypt/ --exclude=/.git/ --exclude=/.venv/ \
        --exclude=__pycache__/ --exclude=.pytest_cache/ --exclude=.ruff_cache/ \
        --exclude=/build/ --exclude=/dist/ --exclude='*.egg-info/' \
        "$source/" "$DEPLOY_HOST:$DEPLOY_PATH/"

    if [[ $has_env != yes ]]; then
        step "First deploy: creating the server's .env"
        if [[ -n ${DEPLOY_ENV_FILE:-} ]]; then
            [[ -f $DEPLOY_ENV_FILE ]] || die "DEPLOY_ENV_FILE not found: $DEPLOY_ENV_FILE"
            "${SSH_CMD[@]}" "$DEPLOY_HOST" "umask 077 && cat > $(printf '%q' "$DEPLOY_PATH/.env")" <"$DEPLOY_ENV_FILE"
        elif [[ -n ${ACME_EMAIL:-} ]]; then
            remote setup-env "$ACME_EMAIL"
        else
            die "the server has no .env: set ACME_EMAIL (runs setup-https.sh there) or DEPLOY_ENV_FILE"
        fi
    fi

    step "Building the new image (the running version keeps serving)"
    if ! remote build; then
        trap - ERR
        if [[ -n $backup ]] && remote restore-files "$backup"; then
            remote drop "$backup" || true
        fi
        die "build failed; the running version was not touched and the files were restored"
    fi

    step "Switching to the new version"
    if ! remote switch || ! remote verify "$HEALTH_TIMEOUT"; then
        trap - ERR
        if [[ -n $backup ]]; then
            step "The new version is not healthy: rolling back to $backup"
            if ! remote restore "$backup" || ! remote verify "$HEALTH_TIMEOUT"; then
                die "rollback failed too: check the server"
            fi
            remote drop "$backup" || true
            die "deploy failed and was rolled back to the version that ran before it"
        fi
        die "the first deploy is not healthy: see the logs above (make logs on the server)"
    fi
    trap - ERR

    step "Pruning backups (keeping $KEEP_BACKUPS)"
    remote prune "$KEEP_BACKUPS"

    step "Deployed $(git -C "$source" describe --always --dirty 2>/dev/null || echo "$ts") to $DEPLOY_HOST:$DEPLOY_PATH"
}

on_error() {
    echo "$PROG: deploy failed." >&2
    if [[ -n ${1:-} ]]; then
        echo "  roll back with: DEPLOY_HOST=$DEPLOY_HOST $PROG --rollback $1" >&2
    fi
}

rollback() {
    local backup=${1:-latest}
    step "Rolling back $DEPLOY_HOST:$DEPLOY_PATH to ${backup/latest/the newest backup}"
    remote restore "$backup"
    remote verify "$HEALTH_TIMEOUT" || die "restored, but not healthy: check the server"
    step "Rolled back"
}

main() {
    local action=deploy arg=""
    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            --list-backups) action=list; shift ;;
            --rollback)
                action=rollback; shift
                if (($#)) && [[ $1 != -* ]]; then arg=$1; shift; fi
                ;;
            --restore-backup) action=rollback; arg=${2:?--restore-backup needs a backup name}; shift 2 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
    done
    [[ -n ${DEPLOY_HOST:-} ]] || die "DEPLOY_HOST is required, e.g. DEPLOY_HOST=deploy@203.0.113.7 $PROG"
    DEPLOY_PATH=${DEPLOY_PATH:-/opt/aiproxy}
    KEEP_BACKUPS=${DEPLOY_KEEP_BACKUPS:-5}
    HEALTH_TIMEOUT=${DEPLOY_HEALTH_TIMEOUT:-180}
    [[ $KEEP_BACKUPS =~ ^[1-9][0-9]*$ ]] || die "DEPLOY_KEEP_BACKUPS must be a positive number"
    [[ $HEALTH_TIMEOUT =~ ^[0-9]+$ ]] || die "DEPLOY_HEALTH_TIMEOUT must be a number of seconds"
    [[ -z $arg || $arg =~ ^aiproxy-[0-9]{8}-[0-9]{6}\.tar\.gz$ ]] || die "not a backup name: $arg (see --list-backups)"
    for tool in ssh rsync; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
    done
    local -a extra=()
    # DEPLOY_SSH_OPTS is split on spaces on purpose (several options).
    read -r -a extra <<<"${DEPLOY_SSH_OPTS:-}"
    SSH_CMD=(ssh -p "${DEPLOY_SSH_PORT:-22}" -o BatchMode=yes -o ConnectTimeout=15 "${extra[@]}")
    "${SSH_CMD[@]}" "$DEPLOY_HOST" true || die "cannot ssh to $DEPLOY_HOST (key-based login is required)"

    case $action in
        deploy) deploy ;;
        list) remote list ;;
        rollback) rollback "$arg" ;;
    esac
}

main "$@"
