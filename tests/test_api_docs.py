"""The API reference (`make docs`) is generated from the docstrings: it builds, and it says what the
layers return."""

import pdoc
import pdoc.render


def test_api_reference_builds_and_documents_the_layers(tmp_path):
    pdoc.render.configure(docformat="restructuredtext")
    pdoc.pdoc("nwtrain.layers", "nwtrain.deploy.streaming", output_directory=tmp_path)
    page = (tmp_path / "nwtrain" / "layers.html").read_text()
    assert "H1v1Layer" in page and "H1v2Synapse" in page
    assert "Integrate input <code>current</code> and return <code>(spk, mem)</code>" in page
    assert (tmp_path / "nwtrain" / "deploy" / "streaming.html").is_file()
