import io
import json

import pytest
from PIL import Image, PngImagePlugin

from synthcheck.inference.metadata import Evidence, combine_verdict, inspect, is_file_history


def metadata_items(data: bytes) -> list:
    """inspect() less the file-history and nothing-found items (tests/test_file_evidence.py covers those)."""
    return [e for e in inspect(data) if not is_file_history(e)]


def png_with_text(**chunks) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    b = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(b, "PNG", pnginfo=info)
    return b.getvalue()


def jpeg_with_exif(**tags) -> bytes:
    exif = Image.Exif()
    ids = {"Software": 0x0131, "Make": 0x010F, "Model": 0x0110}
    for k, v in tags.items():
        exif[ids[k]] = v
    b = io.BytesIO()
    Image.new("RGB", (16, 16)).save(b, "JPEG", exif=exif.tobytes())
    return b.getvalue()


A1111 = "a cat in a hat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"


@pytest.mark.parametrize("chunks,note", [
    ({"parameters": A1111}, "WebUI"),
    ({"prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": {}}})}, "ComfyUI"),
    ({"workflow": json.dumps({"nodes": []})}, "ComfyUI"),
    ({"Software": "NovelAI", "Comment": json.dumps({"steps": 28, "sampler": "k_euler", "uc": ""})}, "NovelAI"),
    ({"invokeai_metadata": "{}"}, "InvokeAI"),
])
def test_generator_png_chunks_are_strong_ai_evidence(chunks, note):
    ev = metadata_items(png_with_text(**chunks))
    assert ev and all(e.indicates == "ai" and e.strength == "strong" for e in ev)
    assert any(note in e.note for e in ev)


def test_ordinary_text_chunks_are_not_evidence():
    assert metadata_items(png_with_text(prompt="holiday photo", parameters="exposure 1/200", Title="Beach")) == []


def test_exif_software_and_camera():
    ev = metadata_items(jpeg_with_exif(Software="Adobe Firefly 2"))
    assert [(e.indicates, e.strength) for e in ev] == [("ai", "moderate")]
    ev = metadata_items(jpeg_with_exif(Software="Adobe Photoshop 25.0", Make="Canon", Model="EOS R5"))
    assert {(e.indicates, e.strength) for e in ev} == {("edited", "info"), ("camera", "weak")}


def test_xmp_iptc_digital_source_type():
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
           b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
           b'</rdf:RDF></x:xmpmeta>')
    b = io.BytesIO()
    Image.new("RGB", (16, 16)).save(b, "JPEG", xmp=xmp)
    ev = metadata_items(b.getvalue())
    assert [(e.field, e.indicates, e.strength) for e in ev] == [("Iptc4xmpExt:DigitalSourceType", "ai", "strong")]


def test_no_metadata_is_no_evidence_and_garbage_never_raises():
    b = io.BytesIO()
    Image.new("RGB", (16, 16)).save(b, "JPEG")
    assert metadata_items(b.getvalue()) == []
    assert inspect(b"not an image at all") == []


def _ev(indicates, strength):
    return Evidence("exif", "f", "v", indicates, strength, "n")


def test_combined_verdict_rule():
    assert combine_verdict("real", [])[0] == "real"
    assert combine_verdict("ai", [])[0] == "ai"
    assert combine_verdict("real", [_ev("ai", "strong")])[0] == "ai"
    assert combine_verdict("uncertain", [_ev("ai", "strong")])[0] == "ai"
    assert combine_verdict("real", [_ev("ai", "moderate")])[0] == "uncertain"
    assert combine_verdict("ai", [_ev("ai", "moderate")])[0] == "ai"
    # camera EXIF is easily copied: never flips an AI verdict
    assert combine_verdict("ai", [_ev("camera", "weak")])[0] == "ai"
    assert combine_verdict("real", [_ev("edited", "info")])[0] == "real"
    # out of the training domain: the pixel score no longer decides, strong metadata still does
    assert combine_verdict("real", [], out_of_domain=True)[0] == "uncertain"
    assert combine_verdict("ai", [], out_of_domain=True)[0] == "uncertain"
    assert combine_verdict("real", [_ev("ai", "strong")], out_of_domain=True)[0] == "ai"
