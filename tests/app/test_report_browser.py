"""The HTML report in a real browser: Debian's Chromium, headless (installed by `make test`
where it can be; skipped cleanly elsewhere)."""

import shutil
import subprocess

import pytest

from invae.app.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# Appended to a copy of the report: counts the images the browser decoded, in one console line.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  console.log(`decoded ${decoded} of ${images.length} images`);
});
</script>"""


def test_report_renders_every_figure_without_console_errors(tmp_path):
    assert main(["simulate", "--p", "5", "--n", "200", "--out", str(tmp_path / "pb")]) == 0
    fit = tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "1", "--method", "em",
                 "--penalty", "auto", "--out", str(fit), "--quiet"]) == 0
    assert main(["report", str(fit)]) == 0
    probe = fit / "probe.html"
    probe.write_text((fit / "report.html").read_text().replace("</body>", _PROBE + "\n</body>"))
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                             "--v=0", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert len(console) == 1 and '"decoded 5 of 5 images"' in console[0], console
    assert 'id="penalty_path"' in result.stdout  # the browser's DOM holds the figures
