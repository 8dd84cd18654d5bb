#!/usr/bin/env bash
# Installs what tests/test_runners.py and the Pub/Sub tests need, idempotently, on a clean Debian
# machine (as root):
#   * prism, Beam's portable runner, built from Beam's Go module at the version setup.py pins;
#   * the Flink job server jar of that Beam version, from Maven Central (through mvn);
#   * pubsub-emulator, an in-memory Pub/Sub server built from tools/pubsub_emulator (Go);
#   * their toolchains when absent: Go (>= the go line of Beam's go.mod), Java 17, Maven.
# Everything lands in $TF_RUNNERS_DIR (default /opt/ticketflow-runners):
#   $TF_RUNNERS_DIR/bin/prism
#   $TF_RUNNERS_DIR/bin/pubsub-emulator
#   $TF_RUNNERS_DIR/flink/beam-runners-flink-$FLINK-job-server-$BEAM.jar
# The tests look there, or at $TF_PRISM_BIN / $TF_PUBSUB_EMULATOR_BIN / $TF_FLINK_JAR when set.
# Exit code: 0 when everything is in place; 1 when something could not be had (each failure is
# printed with its cause; what could be installed still is).
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEAM_VERSION="${BEAM_VERSION:-$(sed -n 's/^BEAM_VERSION = "\(.*\)"$/\1/p' "$REPO_ROOT/setup.py")}"
# Flink versions Beam publishes job servers for: PUBLISHED_FLINK_VERSIONS in
# apache_beam/options/pipeline_options.py. 1.19 runs on Java 17 and is the oldest supported.
FLINK_VERSION="${TF_FLINK_VERSION:-1.19}"
DEST="${TF_RUNNERS_DIR:-/opt/ticketflow-runners}"
PRISM_BIN="$DEST/bin/prism"
EMULATOR_SRC="$REPO_ROOT/tools/pubsub_emulator"
EMULATOR_BIN="$DEST/bin/pubsub-emulator"
FLINK_ARTIFACT="beam-runners-flink-${FLINK_VERSION}-job-server"
FLINK_JAR="$DEST/flink/${FLINK_ARTIFACT}-${BEAM_VERSION}.jar"
failures=()

log() { echo "install_runners: $*"; }

if [[ -z "$BEAM_VERSION" ]]; then
  log "cannot read BEAM_VERSION from $REPO_ROOT/setup.py"; exit 1
fi
mkdir -p "$DEST/bin" "$DEST/flink"

apt_install() {
  # Installs Debian packages only when some are missing; apt-get update once per run.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ -z "${_APT_UPDATED:-}" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------- Go toolchain
GO_CMD=""
find_go() {
  # Sets GO_CMD to a go >= 1.21 (which can switch toolchains itself), installing one if need be.
  [[ -n "$GO_CMD" ]] && return 0
  local go_cmd
  go_cmd="$(command -v go || true)"
  [[ -z "$go_cmd" && -x /usr/local/go/bin/go ]] && go_cmd=/usr/local/go/bin/go
  if [[ -z "$go_cmd" ]]; then
    apt_install ca-certificates golang-go git || { log "apt-get could not install golang-go"; return 1; }
    go_cmd="$(command -v go)"
  fi
  local go_minor
  go_minor="$("$go_cmd" env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
  if [[ -n "$go_minor" && "$go_minor" -lt 21 ]]; then
    # Debian 12's Go (1.19) cannot switch toolchains. Fetch a newer one as the Go module
    # golang.org/toolchain through the module proxy (go's own client), and use it.
    local tc="v0.0.1-go1.26.2.linux-$("$go_cmd" env GOARCH)"
    log "Go 1.$go_minor cannot switch toolchains; fetching golang.org/toolchain@$tc"
    local gomodcache
    gomodcache="$("$go_cmd" env GOMODCACHE)"
    (cd "$(mktemp -d)" && "$go_cmd" mod download "golang.org/toolchain@$tc") \
      || { log "could not download golang.org/toolchain@$tc"; return 1; }
    go_cmd="$gomodcache/golang.org/toolchain@$tc/bin/go"
    chmod +x "$go_cmd" "$gomodcache/golang.org/toolchain@$tc/pkg/tool/"*/* 2>/dev/null || true
  fi
  GO_CMD="$go_cmd"
}

# ---------------------------------------------------------------- prism (Go)
install_prism() {
  if [[ -x "$PRISM_BIN" && -f "$DEST/bin/prism.version" ]] \
      && [[ "$(cat "$DEST/bin/prism.version")" == "$BEAM_VERSION" ]]; then
    log "prism $BEAM_VERSION already at $PRISM_BIN"; return 0
  fi
  find_go || return 1
  local go_cmd="$GO_CMD"
  log "building prism v$BEAM_VERSION with $("$go_cmd" version)"
  # GOTOOLCHAIN=auto lets Go >= 1.21 switch to the go line Beam's go.mod asks for.
  if (cd "$(mktemp -d)" && GOTOOLCHAIN=auto GOBIN="$DEST/bin" \
        "$go_cmd" install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_VERSION"); then
    echo "$BEAM_VERSION" > "$DEST/bin/prism.version"
    log "prism installed at $PRISM_BIN"
  else
    log "go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_VERSION failed"
    return 1
  fi
}

# ---------------------------------------------------------------- Pub/Sub emulator (Go)
install_pubsub_emulator() {
  # The stamp is a hash of the sources: an edit to main.go or a version bump in go.mod rebuilds.
  local stamp
  if [[ ! -f "$EMULATOR_SRC/go.mod" ]]; then log "no Go module at $EMULATOR_SRC"; return 1; fi
  stamp="$(cat "$EMULATOR_SRC/main.go" "$EMULATOR_SRC/go.mod" "$EMULATOR_SRC/go.sum" \
    | sha256sum | cut -d' ' -f1)"
  if [[ -x "$EMULATOR_BIN" && -f "$EMULATOR_BIN.version" ]] \
      && [[ "$(cat "$EMULATOR_BIN.version")" == "$stamp" ]]; then
    log "pubsub-emulator ${stamp:0:12} already at $EMULATOR_BIN"; return 0
  fi
  find_go || return 1
  log "building pubsub-emulator ${stamp:0:12} with $("$GO_CMD" version)"
  # Built beside the target and moved into place, so a failed build leaves no broken binary;
  # -buildvcs=false because a clean machine may have no git to stamp the build with.
  if (cd "$EMULATOR_SRC" && GOTOOLCHAIN=auto \
        "$GO_CMD" build -trimpath -buildvcs=false -o "$EMULATOR_BIN.tmp" .) \
      && mv -f "$EMULATOR_BIN.tmp" "$EMULATOR_BIN"; then
    echo "$stamp" > "$EMULATOR_BIN.version"
    log "pubsub-emulator installed at $EMULATOR_BIN"
  else
    rm -f "$EMULATOR_BIN.tmp"
    log "go build of tools/pubsub_emulator failed"
    return 1
  fi
}

# ---------------------------------------------------------------- Flink job server (Maven)
install_flink() {
  if [[ -s "$FLINK_JAR" ]]; then
    log "Flink job server already at $FLINK_JAR"; return 0
  fi
  command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless \
    || { log "apt-get could not install openjdk-17-jre-headless"; return 1; }
  command -v mvn >/dev/null 2>&1 || apt_install maven \
    || { log "apt-get could not install maven"; return 1; }
  log "fetching org.apache.beam:${FLINK_ARTIFACT}:${BEAM_VERSION} with mvn"
  local out
  if out="$(mvn -B -q dependency:copy \
        "-Dartifact=org.apache.beam:${FLINK_ARTIFACT}:${BEAM_VERSION}" \
        "-DoutputDirectory=$DEST/flink" 2>&1)"; then
    log "Flink job server installed at $FLINK_JAR"
  else
    log "mvn could not fetch org.apache.beam:${FLINK_ARTIFACT}:${BEAM_VERSION}:"
    echo "$out" | grep -m3 -E "ERROR|Could not" | sed 's/^/    /'
    return 1
  fi
}

install_prism || failures+=("prism")
install_pubsub_emulator || failures+=("pubsub-emulator")
install_flink || failures+=("flink job server")

echo "TF_RUNNERS_DIR=$DEST"
if [[ -x "$PRISM_BIN" ]]; then echo "TF_PRISM_BIN=$PRISM_BIN"; else echo "TF_PRISM_BIN= (missing)"; fi
if [[ -x "$EMULATOR_BIN" ]]; then echo "TF_PUBSUB_EMULATOR_BIN=$EMULATOR_BIN"
else echo "TF_PUBSUB_EMULATOR_BIN= (missing)"; fi
if [[ -s "$FLINK_JAR" ]]; then echo "TF_FLINK_JAR=$FLINK_JAR"; else echo "TF_FLINK_JAR= (missing)"; fi
java -version 2>&1 | head -1 | sed 's/^/java: /' || true
if [[ ${#failures[@]} -gt 0 ]]; then
  log "NOT installed: ${failures[*]}"
  # The Flink job server jar is not served by the registry reachable here (see
  # tests/test_runners.py): its test skips, saying so. Anything else missing fails CI.
  for f in "${failures[@]}"; do
    if [[ "$f" != "flink job server" ]]; then exit 1; fi
  done
  exit 0
fi
log "all runners installed"
