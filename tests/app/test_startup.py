"""Start-up: the command line imports the heavy libraries only for the commands that use them."""

import subprocess
import sys

import invae

HEAVY = ("torch", "pyro", "sklearn", "matplotlib", "numpy", "scipy")


def _imported_after(code: str) -> list[str]:
    """The heavy libraries in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(name for name in {HEAVY!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_help_imports_no_heavy_library():
    assert _imported_after("import contextlib, io\nfrom invae.app.cli import main\n"
                           "with contextlib.redirect_stdout(io.StringIO()):\n"
                           "    try:\n        main(['--help'])\n    except SystemExit:\n        pass") == []


def test_eb_npmle_needs_no_torch(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("x\n" + "\n".join(str(value) for value in (-1.2, 0.3, 0.1, 2.5, -0.4, 1.7, 0.0, 3.1)))
    imported = _imported_after(f"from invae.app.cli import main\n"
                               f"assert main(['eb', '--data', {str(data)!r}, '--x', 'x', '--noise-std', '1', "
                               f"'--out', {str(tmp_path / 'eb')!r}, '--quiet']) == 0")
    assert "torch" not in imported and "sklearn" not in imported and "matplotlib" in imported  # prior.png


def test_public_names_load_on_first_use():
    from invae import GaussianGraphicalModel, VariationalEB

    assert VariationalEB.__name__ == "VariationalEB" and GaussianGraphicalModel.__name__ == "GaussianGraphicalModel"
    assert {"VariationalEB", "GaussianGraphicalModel", "__version__"} <= set(dir(invae))
    assert all(getattr(invae, name) is not None for name in invae.__all__)


def test_an_unknown_name_is_an_attribute_error():
    assert not hasattr(invae, "NoSuchThing")
