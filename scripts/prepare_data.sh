#!/usr/bin/env bash
# Installs the Debian packages that hold the offline audio (all from Debian "main"; see docs/data.md) and builds
# data/ from them with scripts/build_datasets.py (16 kHz mono FLAC clips, codec manifests, few-shot task folders).
#
#   bash scripts/prepare_data.sh                 # install what is missing, then build data/
#   bash scripts/prepare_data.sh --root /x       # any other arguments go to scripts/build_datasets.py
#   PREPARE_DATA_SKIP_BUILD=1 bash scripts/prepare_data.sh   # install only
#
# Idempotent: installed packages are skipped (no apt-get update when nothing is missing), built clips are kept.
# A package from non-free or contrib is refused, never installed.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=(ffmpeg fluidsynth)
DATA_PACKAGES=(
  fillets-ng-data-cs fillets-ng-data-nl
  klettres-data ktuberling-data
  asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722
  asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722
  hydrogen-drumkits fluid-soundfont-gm
  # sound_event task: sound effects of six free games (248 MB of downloads, 146 MB of them wesnoth's)
  scorched3d-data wesnoth-1.16-data minetest-data freeciv-data lincity-ng-data chromium-bsu-data
)
PACKAGES=("${TOOLS[@]}" "${DATA_PACKAGES[@]}")

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else echo "[prepare_data] needs root (or sudo) for apt-get" >&2; fi
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# Debian puts the archive area in front of the section: "non-free/sound", "contrib/games"; main has none.
section_of() {
  if installed "$1"; then dpkg-query -W -f='${Section}' "$1"
  else apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Section: //p' | head -1; fi
}
is_free() { case "$(section_of "$1")" in non-free*|contrib*|"") return 1 ;; *) return 0 ;; esac; }

missing=()
for pkg in "${PACKAGES[@]}"; do installed "$pkg" || missing+=("$pkg"); done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "[prepare_data] missing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  to_install=()
  for pkg in "${missing[@]}"; do
    section="$(section_of "$pkg")"
    if [ -z "$section" ]; then
      echo "[prepare_data] WARNING: $pkg is not known to apt; skipped" >&2
    elif ! is_free "$pkg"; then
      echo "[prepare_data] REFUSED: $pkg is in '$section' (not Debian main); not installed" >&2
    else
      to_install+=("$pkg")
    fi
  done
  if [ "${#to_install[@]}" -gt 0 ]; then
    $SUDO apt-get install -y -q --no-install-recommends "${to_install[@]}"
  fi
else
  echo "[prepare_data] all ${#PACKAGES[@]} packages already installed"
fi

echo "[prepare_data] package | version | section | licences named in /usr/share/doc/PKG/copyright"
for pkg in "${PACKAGES[@]}"; do
  if ! installed "$pkg"; then echo "  $pkg | NOT INSTALLED"; continue; fi
  version="$(dpkg-query -W -f='${Version}' "$pkg")"
  section="$(section_of "$pkg")"
  is_free "$pkg" || echo "[prepare_data] WARNING: installed $pkg is from '$section' (not main): do not use its data" >&2
  licences="$(grep -E '^License: *[^ ]' "/usr/share/doc/$pkg/copyright" 2>/dev/null | sed 's/^License: *//' | sort -u | paste -sd ',' - || true)"
  echo "  $pkg | $version | $section | ${licences:-(no machine-readable License: fields; see the copyright file)}"
done

if [ "${PREPARE_DATA_SKIP_BUILD:-0}" = 1 ]; then exit 0; fi

py="${LLM_CODEC_VENV:-.venv}/bin/python"
[ -x "$py" ] || py="python3"
if ! "$py" -c "import numpy, soundfile, soxr, tqdm" 2>/dev/null; then
  echo "[prepare_data] $py lacks numpy/soundfile/soxr/tqdm: run 'bash scripts/run.sh test' once to set up .venv" >&2
  exit 1
fi
exec "$py" scripts/build_datasets.py "$@"
