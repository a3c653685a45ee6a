# shellcheck shell=bash
# Shared by the deployment scripts: read a .env file the way docker compose does.

# Print the value of KEY in FILE (default .env): the last active assignment wins, an `export `
# prefix and surrounding quotes are removed; prints nothing when the key is absent.
env_get() {
    local key=$1 file=${2:-.env}
    [[ -f $file ]] || return 0
    awk -v key="$key" '
        {
            line = $0
            sub(/^[ \t]+/, "", line)
            sub(/^export[ \t]+/, "", line)
            if (index(line, key "=") == 1) { val = substr(line, length(key) + 2); found = 1 }
        }
        END {
            if (!found) exit
            sub(/[ \t\r]+$/, "", val)
            if (val ~ /^".*"$/ || val ~ /^'\''.*'\''$/) val = substr(val, 2, length(val) - 2)
            print val
        }' "$file"
}
