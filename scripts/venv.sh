# Sourced: create/refresh the project venv at .venv when pyproject.toml changed.
PYTHON=${PYTHON:-python3}
stamp=.venv/.maci-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing multiarch-ci into .venv"
  t0=$(date +%s)
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
  echo "   installed in $(( $(date +%s) - t0 )) s"
fi
