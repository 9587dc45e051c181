# shellcheck shell=bash
# Helpers the scripts beside this file share; each sources it (it runs
# nothing by itself).

# The target directory of the workspace whose manifest is $1, as cargo
# resolves it (CARGO_TARGET_DIR and cargo's configuration included).
target_dir() {
    cargo metadata --format-version 1 --no-deps --manifest-path "$1" |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# Runs a command as root: as it is when this is root, else through sudo;
# without sudo, says what it needed and fails.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "${0##*/}: need root to run: $*" >&2
        return 1
    fi
}
