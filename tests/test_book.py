"""The PDF builder (`llm_from_scratch.book`), checked on the PDF itself.

A small fixture book uses every feature the chapters rely on; we build it once with the pandoc + XeLaTeX path and read the
PDF back with poppler's pdftotext / pdfimages.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llm_from_scratch import book
from llm_from_scratch.book import BookError

ROOT = Path(__file__).resolve().parents[1]
HAVE_TEX = shutil.which("xelatex") is not None
HAVE_POPPLER = shutil.which("pdftotext") is not None and shutil.which("pdfimages") is not None
needs_tex = pytest.mark.skipif(not (HAVE_TEX and HAVE_POPPLER),
                               reason="needs xelatex and poppler-utils (scripts/test installs them: apt-get install "
                                      "texlive-xetex texlive-latex-extra texlive-fonts-recommended texlive-plain-generic lmodern poppler-utils)")

LONG_CODE = "result = " + " + ".join(f"value_{i:03d}" for i in range(40)) + "  # LONGCODE_END"
LONG_OUTPUT = "x" * 400 + "LONGOUT_END"


def _png(color: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 4], color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def md(src: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": src}


def code(src: str, outputs: list | None = None) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "source": src, "outputs": outputs or []}


def stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def image(b64: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"image/png": b64, "text/plain": "<Figure>"}}


def write_nb(path: Path, cells: list[dict]) -> None:
    cells = [{**c, "id": f"cell{i}"} for i, c in enumerate(cells)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1))


def make_fixture(root: Path) -> Path:
    "A tiny book project that uses every feature the chapters use."
    (root / "nbs").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "fixturebook"\n\n[tool.nbdev]\nlib_path = "fixturebook"\n'
                                         'nbs_path = "nbs"\njupyter_hooks = false\n')
    (root / "refs.bib").write_text((ROOT / "references.bib").read_text().split("\n\n")[0] + "\n")
    (root / "_quarto.yml").write_text(
        "project:\n  type: book\nbook:\n  title: Fixture Book\n  author: Test Author\n  date: 2026-01-01\n"
        "  site-url: https://example.org/fixture-home\n  output-file: fixture\n"
        "  chapters:\n    - nbs/index.ipynb\n    - nbs/01_feat.ipynb\n    - nbs/03_more.ipynb\n  appendices:\n    - nbs/02_app.ipynb\n"
        "bibliography: refs.bib\nformat:\n  pdf:\n    documentclass: book\n")
    write_nb(root / "nbs" / "index.ipynb", [md("# Fixture Preface\n\n> The preface summary."), md("## Why\n\nPreface text.")])
    write_nb(root / "nbs" / "01_feat.ipynb", [
        md("# Feature Chapter\n\n> A chapter that uses every feature."),
        code("#| default_exp feat"),
        code("#| hide\nHIDDEN_SETUP_MARKER = 1"),
        md("## Cross-references {#sec-xref}\n\nSee @fig-demo and @fig-second, @eq-demo and @tbl-demo, "
           "as shown by [@vaswani2017]. A [hyperlink](https://example.org/a-link)."),
        md("$$ a^2 + b^2 = c^2 $$ {#eq-demo}"),
        md("| name | value |\n|---|---|\n| alpha | 1 |\n\n: Demo table caption. {#tbl-demo}"),
        md("::: {.callout-note}\n## Callout Title Marker\nCallout body text.\n:::"),
        code("#| export\ndef plumbing_fn(a: int) -> int:\n    \"Plumbing docstring.\"\n    return a + 1  # PLUMBING_BODY_MARKER"),
        code("#| exports\ndef shown_fn(a: int) -> int:\n    \"Shown docstring.\"\n    return a * 2  # SHOWN_BODY_MARKER"),
        code("#| echo: false\nprint('ECHO_FALSE_OUTPUT')  # ECHO_FALSE_MARKER", [stream("ECHO_FALSE_OUTPUT\n")]),
        code("print(colored)", [stream("\x1b[31mRED_OUTPUT\x1b[0m and \x1b[1;32mGREEN\x1b[0m, wide \uff21\uff11\n"),
                                stream(" 10%|#   |\r100%|####| PROGRESS_DONE\n", "stderr")]),
        code("#| label: fig-demo\n#| fig-cap: \"A demo figure caption.\"\nplot()", [image(_png("red"))]),
        code("#| label: fig-second\n#| fig-cap: \"A second figure caption.\"\nplot()", [image(_png("blue"))]),
        code(LONG_CODE, [stream(LONG_OUTPUT + "\n")]),
        code("#| output: false\nprint('OUTPUT_FALSE_' + 'VALUE')", [stream("OUTPUT_FALSE_VALUE\n")]),
        code("#| include: false\nINCLUDE_FALSE_MARKER = 1", [stream("INCLUDE_FALSE_OUTPUT\n")]),
    ])
    write_nb(root / "nbs" / "03_more.ipynb", [md("# Third Chapter"), md("## Numbered by its notebook")])
    write_nb(root / "nbs" / "02_app.ipynb", [md("# Appendix Chapter"), md("Back to @sec-xref.")])
    return root


def fixture_with_appendix_cell(tmp_path: Path, cell: dict) -> Path:
    "A fresh fixture book whose appendix ends with `cell`."
    root = make_fixture(tmp_path / "b")
    nb = json.loads((root / "nbs" / "02_app.ipynb").read_text())
    nb["cells"].append({**cell, "id": "extra"})
    (root / "nbs" / "02_app.ipynb").write_text(json.dumps(nb))
    return root


def pdftext(pdf: Path, *args: str) -> str:
    return subprocess.run(["pdftotext", *args, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_fixture(tmp_path_factory.mktemp("fixture"))
    spec = book.read_spec(root)
    res = book.build_pdf(spec, root / "fixture.pdf", root / "_build")
    return root, res


@needs_tex
def test_toc_lists_chapters_in_order(built):
    root, res = built
    toc = pdftext(res.pdf, "-f", "2", "-l", "2")
    order = ["Fixture Preface", "1 Feature Chapter", "3 Third Chapter", "A Appendix Chapter", "References"]
    pos = [toc.find(t) for t in order]
    assert all(p >= 0 for p in pos), toc
    assert pos == sorted(pos), toc
    lay = pdftext(res.pdf, "-layout", "-f", "2", "-l", "2")
    assert re.search(r"Fixture Preface[ .]*[ivx]+\s*$", lay, re.M), "the preface is front matter: roman page numbers"
    assert re.search(r"1 Feature Chapter[ .]*1\s*$", lay, re.M), "chapter 1 starts at page 1"
    assert "Cross-references" in toc, "the contents list sections too"


@needs_tex
def test_captions_numbered_and_references_resolved(built):
    _, res = built
    text = pdftext(res.pdf)
    assert "Figure 1.1: A demo figure caption." in text
    assert "Figure 1.2: A second figure caption." in text
    assert "Table 1.1: Demo table caption." in text
    flat = " ".join(text.split())
    assert "See Figure 1.1 and Figure 1.2, Equation 1.1 and Table 1.1" in flat, flat[:3000]
    assert "Back to Section 1.1" in flat
    assert "??" not in text


@needs_tex
def test_citation_and_bibliography(built):
    _, res = built
    flat = " ".join(pdftext(res.pdf).split())
    assert "(Vaswani et al. 2017)" in flat
    assert "Attention Is All You Need" in flat.split("References")[-1]
    last = pdftext(res.pdf, "-f", str(res.pages), "-l", str(res.pages))     # the bibliography's page
    assert "APPENDIX" not in last.upper().split("ATTENTION IS ALL")[0], "the running header still says Appendix"
    assert "Https://" not in flat and "https://arxiv.org/abs/1706.03762" in flat


@needs_tex
def test_title_page_has_qr_code_and_link(built):
    _, res = built
    first = pdftext(res.pdf, "-f", "1", "-l", "1")
    assert "Fixture Book" in first and "https://example.org/fixture-home" in first
    imgs = subprocess.run(["pdfimages", "-f", "1", "-l", "1", "-list", str(res.pdf)], capture_output=True, text=True).stdout
    rows = [r for r in imgs.splitlines()[2:] if r.strip()]
    assert len(rows) == 1, imgs
    w, h = int(rows[0].split()[3]), int(rows[0].split()[4])
    assert w == h and w >= 21, "a QR code is a square image of at least 21 modules"
    # the QR code written for the title page encodes the home page
    import qrcode
    ref = qrcode.QRCode(border=2, box_size=10)
    ref.add_data("https://example.org/fixture-home")
    ref.make(fit=True)
    assert w == (ref.modules_count + 4) * 10


@needs_tex
def test_directives_hide_and_show(built):
    _, res = built
    text = pdftext(res.pdf)
    for hidden in ["HIDDEN_SETUP_MARKER", "PLUMBING_BODY_MARKER", "ECHO_FALSE_MARKER", "OUTPUT_FALSE_VALUE",
                   "INCLUDE_FALSE_MARKER", "INCLUDE_FALSE_OUTPUT", "default_exp"]:
        assert hidden not in text, hidden
    assert not re.search(r"(?m)^\s*#\| ", text), "cell directives never reach the page"
    for shown in ["SHOWN_BODY_MARKER", "Shown docstring.", "plumbing_fn", "Plumbing docstring.", "ECHO_FALSE_OUTPUT",
                  "Callout Title Marker", "Callout body text.", "hyperlink", "PROGRESS_DONE", "OUTPUT_FALSE_"]:
        assert shown in text, shown
    assert text.count("SHOWN_BODY_MARKER") == 1, "an #| exports cell is shown once, without a repeated signature box"


@needs_tex
def test_outputs_have_no_ansi_codes(built):
    _, res = built
    text = pdftext(res.pdf)
    assert "RED_OUTPUT and GREEN, wide \uff21\uff11" in text, "full-width characters are typeset with the fallback font"
    fonts = subprocess.run(["fc-list", ":charset=ff21", "family"], capture_output=True, text=True).stdout
    if fonts.strip(): assert not res.warnings, res.warnings
    assert "[31m" not in text and "[0m" not in text and "\x1b" not in text
    assert " 10%" not in text, "carriage-return overwrites keep only the final progress bar"


@needs_tex
def test_figures_are_embedded(built):
    _, res = built
    imgs = subprocess.run(["pdfimages", "-list", str(res.pdf)], capture_output=True, text=True).stdout
    assert len([r for r in imgs.splitlines()[2:] if r.strip()]) >= 3  # QR code + two figures


@needs_tex
def test_code_listings_wrap_inside_the_page(built):
    "No word of the PDF runs past the text block into the right margin; long lines wrap and nothing is lost."
    root, res = built
    layout = pdftext(res.pdf, "-bbox")
    pages = re.findall(r'<page width="([\d.]+)" height="[\d.]+">(.*?)</page>', layout, re.S)
    worst = 0.0
    for width, body in pages:
        right_margin = float(width) - max(float(x) for x in re.findall(r'xMax="([\d.]+)"', body) or ["0"])
        worst = max(worst, float(width) - right_margin)
        assert right_margin > 0.5 * 72 / 2.54 * 2.5, f"text runs into the right margin (xMax {float(width) - right_margin:.1f} of {width})"
    text = pdftext(res.pdf)
    joined = re.sub(r"[\s\u21aa\u230b]+", "", text)  # drop line breaks and fvextra's continuation marks
    assert re.sub(r"\s+", "", LONG_CODE) in joined, "the long code line is complete"
    assert LONG_OUTPUT in joined, "the long output line is complete"
    assert len(re.findall(r"(?m)^x{20,}", text)) >= 3, "the long output line wraps over several lines"


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from llm_from_scratch.cli import main; sys.exit(main(sys.argv[1:]))",
                           "book", "--root", str(root), *args], capture_output=True, text=True)


def test_missing_chapter_is_a_clear_error(tmp_path):
    root = make_fixture(tmp_path / "b")
    (root / "nbs" / "02_app.ipynb").unlink()
    with pytest.raises(BookError, match=r"02_app.ipynb.*listed in _quarto.yml.*does not exist"):
        book.read_spec(root)
    r = _cli(root)
    assert r.returncode == 1 and "02_app.ipynb" in r.stderr and "does not exist" in r.stderr


def test_invalid_notebook_json_is_a_clear_error(tmp_path):
    root = make_fixture(tmp_path / "b")
    (root / "nbs" / "01_feat.ipynb").write_text('{"cells": [\n  {"cell_type": "markdown",, }\n]}')
    with pytest.raises(BookError, match=r"01_feat.ipynb is not a valid notebook: invalid JSON at line 2"):
        book.read_spec(root)
    r = _cli(root)
    assert r.returncode == 1 and "invalid JSON at line 2" in r.stderr


def test_missing_citation_key_is_a_clear_error(tmp_path):
    root = fixture_with_appendix_cell(tmp_path, md("As argued by [@nobody2099]."))
    (root / "fixture.pdf").write_bytes(b"%PDF-1.5 previous good book")
    r = _cli(root)
    assert r.returncode == 1 and "citation @nobody2099 is not in the bibliography" in r.stderr and "02_app" in r.stderr
    assert (root / "fixture.pdf").read_bytes() == b"%PDF-1.5 previous good book", "a failed build keeps the previous PDF"


def test_undefined_cross_reference_is_a_clear_error(tmp_path):
    root = fixture_with_appendix_cell(tmp_path, md("See @fig-nowhere."))
    with pytest.raises(BookError, match=r"02_app.*@fig-nowhere has no matching label"):
        book.build_pdf(book.read_spec(root), root / "out.pdf", root / "_build")


def test_missing_image_is_a_clear_error(tmp_path):
    root = fixture_with_appendix_cell(tmp_path, md("![A diagram.](../figures/not-there.png)"))
    with pytest.raises(BookError, match=r"image '../figures/not-there.png' does not exist"):
        book.build_pdf(book.read_spec(root), root / "out.pdf", root / "_build")


@needs_tex
def test_latex_error_fails_the_build(tmp_path):
    root = fixture_with_appendix_cell(tmp_path, md("Broken: \\thiscommanddoesnotexist{x}"))
    with pytest.raises(BookError, match=r"xelatex failed.*\n.*Undefined control sequence"):
        book.build_pdf(book.read_spec(root), root / "out.pdf", root / "_build")
    assert not (root / "out.pdf").exists()


def test_quarto_yml_is_a_valid_book_project():
    "The repository's _quarto.yml is what Quarto expects of a book, and lists notebooks that exist."
    import yaml
    cfg = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    assert cfg["project"]["type"] == "book"
    assert cfg["format"]["pdf"]["pdf-engine"] == "xelatex"
    assert cfg["execute"]["enabled"] is False
    spec = book.read_spec(ROOT)
    assert spec.chapters[0] == Path("nbs/index.ipynb")
    assert spec.chapters[1] == Path("nbs/00_primer.ipynb")
    assert Path("nbs/00_core.ipynb") in spec.appendices and Path("nbs/14_book.ipynb") in spec.appendices
    nbs = sorted(p.relative_to(ROOT) for p in (ROOT / "nbs").glob("*.ipynb"))
    assert sorted(spec.all_chapters) == nbs, "every notebook is a chapter of the book, and every chapter a notebook"


@needs_tex
@pytest.mark.slow
def test_the_real_book_builds(tmp_path):
    "The book itself builds from the stored outputs, with every chapter of _quarto.yml in its table of contents."
    res = book.build_book(ROOT, tmp_path / "book.pdf", engine="pandoc")
    pdf, pages = res.pdf, res.pages
    assert pages and pages >= 20
    toc = " ".join(pdftext(pdf, "-f", "2", "-l", "10").split())          # the contents list sections: several pages
    titles = []
    for rel in book.read_spec(ROOT).all_chapters:
        first = json.loads((ROOT / rel).read_text())["cells"][0]["source"]
        titles.append(re.match(r"#\s+(.+)", "".join(first)).group(1).strip())
    def at(i: int, t: str) -> int:          # a chapter's entry: its number (or appendix letter), then its title
        if i == 0: return toc.find(t)       # the unnumbered preface
        m = re.search(r"(?:^|\s)(?:\d{1,2}|[A-Z]) " + re.escape(t), toc)
        return m.start() if m else -1
    pos = [at(i, t) for i, t in enumerate(titles)]
    assert all(p >= 0 for p in pos) and pos == sorted(pos), (titles, pos, toc[:2000])
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    low = [l for l in images.splitlines()[2:] if l.split()[0] != "1" and int(l.split()[12]) < 290]   # page 1: QR code
    assert not low, f"figures printed below 300 dpi (re-run their chapters with nbs/matplotlibrc): {low[:3]}"
    orphans = []                            # a numbered heading as the last line of a page, its text overleaf
    for i, page in enumerate(pdftext(pdf, "-layout").split("\f"), 1):
        lines = [l.strip() for l in page.splitlines() if l.strip()]
        if lines and re.fullmatch(r"[0-9ivxlc]+", lines[-1]): lines = lines[:-1]
        if lines and re.match(r"^(\d+|[A-Z])\.\d+(\.\d+)? [A-Z]", lines[-1]) and ". . ." not in lines[-1]:
            orphans.append((i, lines[-1]))
    assert not orphans, f"headings orphaned at the foot of a page: {orphans}"
    last = " ".join(pdftext(pdf, "-f", str(pages - 3), "-l", str(pages)).split())   # the index closes the book
    assert "Index" in last and re.search(r"byte pair encoding \(BPE\), (\d+, )*\d+", last), last[-1500:]


def test_execute_refreshes_outputs_at_book_scale(tmp_path):
    "`--execute` re-runs each chapter at book scale and stores the fresh outputs; a failing chapter is left untouched."
    root = make_fixture(tmp_path / "b")
    nb_path = root / "nbs" / "02_app.ipynb"
    write_nb(nb_path, [md("# Appendix Chapter"), code("import os\nprint('scale is', os.environ['LLMFS_SCALE'])")])
    spec = book.read_spec(root)
    spec.chapters, spec.appendices = [], [Path("nbs/02_app.ipynb")]
    times = book.execute_chapters(spec)
    assert [t[0] for t in times] == ["nbs/02_app.ipynb"]
    outs = json.loads(nb_path.read_text())["cells"][1]["outputs"]
    assert outs and "scale is book" in "".join(outs[0]["text"])
    broken = [md("# Appendix Chapter"), code("raise RuntimeError('chapter broke')")]
    write_nb(nb_path, broken)
    before = nb_path.read_text()
    with pytest.raises(BookError, match=r"02_app.ipynb failed while executing at book scale[\s\S]*chapter broke"):
        book.execute_chapters(spec)
    assert nb_path.read_text() == before


def test_quarto_path_stages_processed_notebooks(tmp_path, monkeypatch):
    """With Quarto installed, `llmfs book` renders nbdev-processed copies of the chapters with `quarto render`.
    Quarto cannot be installed here, so a stand-in `quarto` on PATH records what it was given and writes a PDF."""
    root = make_fixture(tmp_path / "b")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "quarto-args.txt"
    (fake_bin / "quarto").write_text(
        "#!/usr/bin/env bash\n"
        f"echo \"$@\" > {log}\n"
        "mkdir -p \"$2/_book\" && printf '%%PDF-1.5 stand-in' > \"$2/_book/fixture.pdf\"\n")
    (fake_bin / "quarto").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    res = book.build_book(root, root / "out.pdf")  # engine auto picks quarto when it is on PATH
    stage = root / book.QUARTO_STAGE
    assert log.read_text().split() == ["render", str(stage), "--to", "pdf"]
    assert res.pdf.read_bytes() == b"%PDF-1.5 stand-in"
    for rel in ["_quarto.yml", "refs.bib", "qr.png", "_titlepage.tex", "index.ipynb", "01_feat.ipynb", "02_app.ipynb",
                "03_more.ipynb", "references.qmd"]:
        assert (stage / rel).is_file(), rel
    staged = (stage / "01_feat.ipynb").read_text()
    assert "HIDDEN_SETUP_MARKER" not in staged and "PLUMBING_BODY_MARKER" not in staged, "nbdev's processors ran"
    assert "SHOWN_BODY_MARKER" in staged and "#| label: fig-demo" in staged, "Quarto's own cell options are kept"
    assert "https://example.org/fixture-home" in (stage / "_titlepage.tex").read_text()


def test_staged_quarto_project_follows_quartos_rules(tmp_path):
    """What a real render with Quarto 1.7.34 required, checked on the staged project without Quarto: the home page at the
    project's root, cell sources as lists of lines, unique labels, a References chapter, the same numbering as the
    pandoc path (unnumbered preface and show_doc headings, chapter numbers from file names), the pandoc path's line
    breaking in the preamble, no icons (no fontawesome5), and a stage of its own outside nbdev's _proc cache."""
    import yaml
    root = make_fixture(tmp_path / "b")
    stage = book.stage_quarto(book.read_spec(root), tmp_path / "stage")
    conf = yaml.safe_load((stage / "_quarto.yml").read_text())
    chapters, apps = conf["book"]["chapters"], conf["book"]["appendices"]
    assert chapters == ["index.ipynb", "01_feat.ipynb", "03_more.ipynb"] and apps == ["02_app.ipynb", "references.qmd"]
    assert "::: {#refs}" in (stage / "references.qmd").read_text() and "{.unnumbered}" in (stage / "references.qmd").read_text()
    nbs = {n: json.loads((stage / n).read_text()) for n in chapters + apps if n.endswith(".ipynb")}
    labels = []
    for name, nb in nbs.items():
        assert all(isinstance(c["source"], list) for c in nb["cells"]), f"{name}: a cell source is one string"
        assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])
        src = "".join("".join(c["source"]) for c in nb["cells"])
        labels += re.findall(r"#\|\s*label:\s*(\S+)", src)
    assert len(labels) == len(set(labels)) and "fig-demo" in labels
    assert "".join(nbs["index.ipynb"]["cells"][0]["source"]).startswith("# Fixture Preface {.unnumbered}")
    assert "\\setcounter{chapter}{2}" in "".join(nbs["01_feat.ipynb"]["cells"][-1]["source"])   # 03_more is chapter 3
    docs = [o for c in nbs["01_feat.ipynb"]["cells"] for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    heads = [l for o in docs for l in "".join(o["data"]["text/markdown"]).splitlines() if l.startswith("#")]
    assert heads and all("{.unnumbered .unlisted}" in h for h in heads), heads
    pdf = conf["format"]["pdf"]
    assert pdf["callout-icon"] is False and "breaklines" in pdf["include-in-header"]["text"]
    assert "fontawesome" not in (stage / "_quarto.yml").read_text()
    assert not book.QUARTO_STAGE.startswith("_proc")


def test_real_book_labels_are_unique():
    "Quarto refuses a label defined twice across the book (the pandoc path would silently link to one of them)."
    spec = book.read_spec(ROOT)
    seen: dict[str, str] = {}
    for rel in spec.all_chapters:
        for c in json.loads((ROOT / rel).read_text())["cells"]:
            for lab in re.findall(r"^#\|\s*label:\s*(\S+)", "".join(c["source"]), re.M):
                assert lab not in seen, f"{lab} in {rel} and {seen[lab]}"
                seen[lab] = str(rel)


@pytest.mark.skipif(shutil.which("quarto") is None, reason="Quarto is not installed (it cannot be, from PyPI, offline)")
@needs_tex
def test_quarto_and_pandoc_build_the_same_book(tmp_path):
    "Where Quarto is installed: both engines give the same chapter titles and numbers, and page counts within 10 %."
    a = book.build_book(ROOT, tmp_path / "pandoc.pdf", engine="pandoc")
    b = book.build_book(ROOT, tmp_path / "quarto.pdf", engine="quarto")
    heads = lambda pdf: re.findall(r"^(?:Chapter\s+\d+|Appendix\s+[A-Z])\s*$\s*^(.+)$", pdftext(pdf, "-layout"), re.M)
    assert heads(a.pdf) == heads(b.pdf)
    assert abs(a.pages - b.pages) <= 0.1 * a.pages, (a.pages, b.pages)


def test_execute_flag_reports_a_failing_chapter(tmp_path):
    "`llmfs book --execute` stops at the first chapter that fails, names it, exits 1 and leaves that notebook as it was."
    root = make_fixture(tmp_path / "b")
    before = (root / "nbs" / "01_feat.ipynb").read_text()
    r = _cli(root, "--execute")
    assert r.returncode == 1, r.stderr
    assert "executed nbs/index.ipynb" in r.stderr and "01_feat.ipynb failed while executing at book scale" in r.stderr
    assert "NameError: name 'colored' is not defined" in r.stderr and "\x1b[" not in r.stderr.split("failed while")[1]
    assert (root / "nbs" / "01_feat.ipynb").read_text() == before
    assert not (root / "fixture.pdf").exists()


def test_no_cross_reference_markup_in_code():
    "Code listings print verbatim: an `@eq-...` in a docstring would reach the page as markup, not as a reference."
    spec = book.read_spec(ROOT)
    for rel in spec.all_chapters:
        for c in json.loads((ROOT / rel).read_text())["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] != "code" or rel.stem == "14_book": continue     # the builder's own tests quote markup
            code = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("#|"))   # captions may cite
            assert not re.search(r"@(eq|fig|tbl|sec)-\w", code), f"{rel}: {src[:120]}"


CODE_COLUMNS = 88   # what fits the text width in the listing font (16 cm at 8.5 pt DejaVu Sans Mono)


def _overflowing_code_lines(src: str) -> list[str]:
    "Lines of `src` wider than CODE_COLUMNS whose overflow is code or a comment, not the inside of a string literal."
    import io
    import tokenize
    lines = src.split("\n")
    try: toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError): toks = []
    spans: dict[int, list[tuple[int, int]]] = {}
    for t in toks:
        if t.type != tokenize.STRING: continue
        for r in range(t.start[0], t.end[0] + 1):
            a = t.start[1] if r == t.start[0] else 0
            spans.setdefault(r, []).append((a, t.end[1] if r == t.end[0] else len(lines[r - 1])))
    return [l for r, l in enumerate(lines, 1) if len(l) > CODE_COLUMNS and not l.startswith("#|")
            and not all(any(a <= c < b for a, b in spans.get(r, [])) for c in range(CODE_COLUMNS, len(l))
                        if not l[c].isspace())]


def test_code_fits_the_page():
    """Printed code keeps within the listing width, so it does not wrap on the page: only a string literal too long to
    split (a URL, a regex, LaTeX) may run past it."""
    assert _overflowing_code_lines("x = 1\n" + "y = '" + "a" * 100 + "'\n") == []
    assert _overflowing_code_lines("z = f(" + "a, " * 40 + ")\n")
    wide = []
    for rel in book.read_spec(ROOT).all_chapters:
        for code in printed_cells(json.loads((ROOT / rel).read_text())):
            wide += [f"{rel.name}: {l}" for l in _overflowing_code_lines(code)]
    assert not wide, f"{len(wide)} code lines wider than {CODE_COLUMNS} columns:\n" + "\n".join(wide[:20])


def printed_cells(nb: dict) -> list[str]:
    """The code of a chapter's printed cells, in order, without their `#|` options. Cells nbdev hides (`hide`,
    `exporti`, `export`, whose code is not printed) and cells with `echo`/`include: false` are left out."""
    cells = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] != "code": continue
        opts, code = book.cell_options(src)
        directives = " ".join(l[2:] for l in src.splitlines() if l.startswith("#|"))
        if re.search(r"\b(hide|exporti|export)\b(?!s)", directives) or opts.get("echo", True) is False \
                or opts.get("include", True) is False: continue
        cells.append(code)
    return cells


def printed_code(nb: dict) -> str:
    "What a reader can type in: the printed cells (`printed_cells`) without IPython magics or bare `show_doc` calls."
    import ast
    cells = []
    for src in printed_cells(nb):
        code = "\n".join(l for l in src.splitlines() if not re.match(r"(%|!(?!=))", l))
        body = ast.parse(code).body
        if body and all(isinstance(x, ast.Expr) and getattr(getattr(x.value, "func", None), "id", "") == "show_doc"
                        for x in body): continue
        cells.append(code)
    return "\n\n".join(cells)


def undefined_names(code: str) -> list[str]:
    "Names pyflakes finds used but never defined or imported in `code` (IPython's own builtins excepted)."
    from pyflakes.api import check
    from pyflakes.reporter import Reporter
    out = io.StringIO()
    check(code, "<printed cells>", Reporter(out, out))
    return sorted({m.group(1) for m in re.finditer(r"undefined name '(\w+)'", out.getvalue())}
                  - {"display", "get_ipython"})


def test_printed_code_runs_as_printed():
    """Every printed code cell runs as printed: pyflakes over a chapter's printed cells alone, in order, finds no name
    that only a hidden cell (or an unprinted `#| export` cell) defines."""
    assert undefined_names("import math\nx = math.pi\n") == []
    assert undefined_names("y = plt.figure()\n") == ["plt"]
    nb = {"cells": [{"cell_type": "code", "source": "#| hide\nimport time\n"},
                    {"cell_type": "code", "source": "t = time.time()\n"}]}
    assert undefined_names(printed_code(nb)) == ["time"]
    found = {}
    for rel in book.read_spec(ROOT).all_chapters:
        names = undefined_names(printed_code(json.loads((ROOT / rel).read_text())))
        if names: found[rel.name] = names
    assert not found, f"printed code uses names that only hidden cells define: {found}"


def test_no_bare_signature_boxes():
    "A public function exported with `#| export` shows in the PDF as a signature box without its code: show the code."
    for rel in book.read_spec(ROOT).all_chapters:
        for c in json.loads((ROOT / rel).read_text())["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] == "code" and re.match(r"#\|\s*export(\s+\w+)?\s*\n", src):
                public = [n for n in re.findall(r"^(?:def|class) (\w+)", src, re.M) if not n.startswith("_")]
                assert not public, f"{rel}: {public} exported with '#| export'; use '#| exports' to show the code"



def test_outputs_show_no_build_machine_paths_or_addresses():
    """Outputs print paths relative to the cache, the project or a temporary folder (`display_path`), never the build
    machine's; and no one's e-mail address (chapter 1's `find_pii` finds none)."""
    from llm_from_scratch.data import find_pii
    path = re.compile(r"(?<![\w<.~])(/tmp/|/root/|/home/|/work/|/Users/)")
    for rel in book.read_spec(ROOT).all_chapters:
        for i, c in enumerate(json.loads((ROOT / rel).read_text())["cells"]):
            for o in c.get("outputs", []):
                text = "".join(o.get("text", "")) + "".join((o.get("data") or {}).get("text/plain", ""))
                text += "".join((o.get("data") or {}).get("text/html", ""))
                assert not path.search(text), f"{rel} cell {i}: {text[max(0, path.search(text).start() - 40):][:120]!r}"
                assert not [x for k, x in find_pii(text) if k == "EMAIL"], f"{rel} cell {i}: {find_pii(text)}"


def test_nbdev_doc_processing_runs_on_every_chapter(tmp_path):
    """nbdev runs every cell that contains an import when it processes notebooks for docs (`nbdev-proc-nbs`); such a
    cell must not need names from cells it does not run. Imports therefore sit in cells of their own."""
    for rel in book.read_spec(ROOT).all_chapters:
        book.process_notebook(ROOT / rel, ROOT)         # our builder's processing, a strict superset of the checks
    import ast
    for rel in book.read_spec(ROOT).all_chapters:
        for c in json.loads((ROOT / rel).read_text())["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] != "code" or re.match(r"#\|\s*(export|exports|exporti|hide)\b", src): continue
            try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith("#|")))
            except SyntaxError: continue
            top = tree.body
            if top and isinstance(top[0], (ast.Import, ast.ImportFrom)):
                assert all(isinstance(t, (ast.Import, ast.ImportFrom, ast.Try)) for t in top), f"{rel}: {src[:160]!r}"
