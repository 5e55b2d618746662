"""REST API: every endpoint, every error path, the hostile-input corpus, batching, and a real server process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hostile import corpus
from synthcheck.inference.detector import Detector
from synthcheck.serving.serve import create_app
from synthcheck.serving.service import ServeSettings

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "src" / "synthcheck" / "samples").glob("*.jpg"))
CORPUS = corpus()


@pytest.fixture(scope="module")
def det():
    return Detector.load()


def client_for(det, **settings) -> TestClient:
    return TestClient(create_app(ServeSettings(ui=False, **settings), detector=det), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(det):
    with client_for(det) as c:
        yield c


def files_of(*paths):
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def assert_error(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body["error"]) == {"code", "message"}
    for w in words:
        assert w in body["error"]["message"], body


# --- endpoints ----------------------------------------------------------------------------------

def test_health_ready_docs_and_models(client, det):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["model"] == det.model_id
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/explain", "/v1/models", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    m = client.get("/v1/models").json()
    assert m["loaded"]["id"] == det.model_id == "auto" and {"default", "photo"} <= set(m["bundled"])
    for name, member in det.members.items():  # the auto detector: every model it routes to, with its settings
        assert m["loaded"]["members"][name]["threshold"] == pytest.approx(member.threshold)
        assert m["loaded"]["members"][name]["resize_policy"] == member.spec.label()
    assert m["limits"]["max_files"] == 16 and m["limits"]["api_key"] is False


def test_detect_matches_the_library_exactly(client, det):
    r = client.post("/v1/detect", files=files_of(*SAMPLES))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == det.model_id and len(body["results"]) == len(SAMPLES)
    lib = det.predict([p.read_bytes() for p in SAMPLES], names=[p.name for p in SAMPLES])
    for got, want, path in zip(body["results"], lib, SAMPLES):
        assert got["file"] == path.name
        assert got["prob_ai"] == want.prob_ai and got["verdict"] == want.verdict
        assert got["model"] == want.model and got["route"] == want.route and got["threshold"] == want.threshold
        assert got["timing_ms"]["total"] >= got["timing_ms"]["decode"] >= 0
    # each image went to the model made for its size: the 512 px sample to the photo model
    models = {path.name: got["model"] for got, path in zip(body["results"], SAMPLES)}
    assert all(m.startswith("photo:" if "diffusiondb" in n else "default:") for n, m in models.items())
    # CIFAKE samples are named by their true class: no confident verdict is wrong (one is a hard case)
    for got in body["results"]:
        if "cifake" in got["file"]:
            assert got["verdict"] in (got["file"].split("_")[0], "uncertain")


def test_detect_raw_body_and_metadata_evidence(client):
    img = Image.open(SAMPLES[0]).convert("RGB").resize((64, 64))
    import io
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=_sd_parameters())
    r = client.post("/v1/detect", content=buf.getvalue(), headers={"X-Filename": "gen.png"})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["file"] == "gen.png" and res["verdict"] == "ai" and res["reason"] != "pixels"
    assert any(e["indicates"] == "ai" for e in res["evidence"])


def _sd_parameters():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a photo of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: sd_xl_base_1.0")
    return info


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "spectrum", "lime", "shap"])
def test_explain_png_and_json(client, det, method):
    data = SAMPLES[0].read_bytes()
    r = client.post(f"/v1/explain?method={method}", files={"file": ("a.jpg", data)})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    want = det.predict(data)[0]
    assert float(r.headers["x-synthcheck-prob-ai"]) == pytest.approx(want.prob_ai, abs=1e-6)
    assert r.headers["x-synthcheck-verdict"] == want.verdict
    if method in ("gradcam", "spectrum"):
        j = client.post(f"/v1/explain?method={method}&format=json", files={"file": ("a.jpg", data)}).json()
        assert j["verdict"] == want.verdict and j["method"] == method
        import base64
        assert base64.b64decode(j["png_base64"])[:4] == b"\x89PNG"


# --- error paths ----------------------------------------------------------------------------------

def test_errors_are_json_4xx(client):
    assert_error(client.post("/v1/detect"), 400, "empty request")
    assert_error(client.post("/v1/detect", data={"note": "no file"}, files={"x": ("", b"")}), 400, "no file")
    # a url-encoded form is not multipart: its body is taken as one image, and it is text
    assert_error(client.post("/v1/detect", data={"note": "only a text field"}), 422, "the content is text")
    r = client.post("/v1/detect", content=b"--xyz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
                                            b"\r\nabc", headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code in (400, 422) and "error" in r.json()
    r = client.post("/v1/detect", content=b"garbage", headers={"content-type": "multipart/form-data"})
    assert_error(r, 400, "multipart")
    assert_error(client.get("/v1/detect"), 405)
    assert_error(client.get("/v1/nothing-here"), 404, "/docs")
    assert_error(client.post("/v1/explain?method=bogus", files={"file": ("a.jpg", SAMPLES[0].read_bytes())}), 422, "method")
    assert_error(client.post("/v1/explain?format=gif", files={"file": ("a.jpg", SAMPLES[0].read_bytes())}), 422, "format")
    assert_error(client.post("/v1/explain", files=files_of(*SAMPLES[:2])), 400, "one image")
    assert_error(client.post("/v1/explain", files={"file": ("bad.jpg", b"<html></html>")}), 422, "bad.jpg", "HTML")
    assert_error(client.post("/v1/detect", content=b"x", headers={"content-length": "abc"}), 400, "Content-Length")


def test_mixed_batch_fails_with_422_but_keeps_the_good_results(client, det):
    files = files_of(SAMPLES[0]) + [("files", ("broken.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg"))]
    r = client.post("/v1/detect", files=files)
    assert_error(r, 422, "broken.jpg")
    res = r.json()["results"]
    assert res[0]["prob_ai"] == det.predict(SAMPLES[0].read_bytes())[0].prob_ai
    assert "error" in res[1] and "prob_ai" not in res[1]


def test_limits(det):
    with client_for(det, max_request_mb=0.01, max_files=2, max_pixels=2000) as c:
        big = os.urandom(20_000)
        assert_error(c.post("/v1/detect", content=big), 413, "limit")
        # a lying Content-Length is caught while streaming
        def gen():
            for _ in range(10):
                yield os.urandom(4096)
        assert_error(c.post("/v1/detect", content=gen()), 413, "limit")
        assert_error(c.post("/v1/detect", files=files_of(*SAMPLES[:3])), 413, "files")
        img = Image.new("RGB", (100, 100))
        import io
        buf = io.BytesIO()
        img.save(buf, "PNG")
        assert_error(c.post("/v1/detect", files={"files": ("big.png", buf.getvalue())}), 422, "big.png", "over the limit of 2,000")
        assert c.post("/v1/detect", files=files_of(*SAMPLES[:2])).status_code == 200
    with client_for(det, timeout_s=1e-9) as c:
        r = c.post("/v1/detect", files=files_of(SAMPLES[0]))
        assert_error(r, 503, "longer than")
        assert r.headers["retry-after"] == "5"
        assert c.get("/healthz").status_code == 200


def test_api_key_and_cors(det):
    with client_for(det, api_key="s3cret", cors_origins=["https://newsroom.example"]) as c:
        assert_error(c.post("/v1/detect", files=files_of(SAMPLES[0])), 401, "X-API-Key")
        assert_error(c.get("/v1/models", headers={"X-API-Key": "wrong"}), 401)
        assert c.post("/v1/detect", files=files_of(SAMPLES[0]), headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open
        r = c.options("/v1/detect", headers={"Origin": "https://newsroom.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") == "https://newsroom.example"
        r = c.options("/v1/detect", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") is None


# --- the hostile corpus -------------------------------------------------------------------------

def test_corpus_is_big_enough():
    assert len(CORPUS) >= 40
    assert sum(1 for c in CORPUS if c[3] == "reject") >= 20 and sum(1 for c in CORPUS if c[3] == "verdict") >= 20


@pytest.mark.parametrize("cid,name,data,expect,same_as", CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_input(client, det, cid, name, data, expect, same_as):
    r = client.post("/v1/detect", files={"files": (name, data, "image/jpeg")})
    assert r.status_code < 500, r.text
    body = r.json()
    if expect == "bad-request":
        assert_error(r, 400)
        assert client.get("/healthz").status_code == 200
        return
    res = body["results"][0]
    # echoed as data only: printable, capped, never a header (httpx percent-encodes control characters)
    assert all(ch.isprintable() for ch in res["file"]) and len(res["file"]) <= 200 and "x-injected" not in r.headers
    if name.isprintable():
        assert res["file"] == name[:200]
    if expect == "reject":
        assert r.status_code == 422 and "error" in res
        assert res["file"] in body["error"]["message"]
    else:
        assert r.status_code == 200, body
        assert res["verdict"] in ("ai", "real", "uncertain") and 0.0 <= res["prob_ai"] <= 1.0
        assert res["prob_ai"] == det.predict(data)[0].prob_ai
        if same_as:
            other = next(c for c in CORPUS if c[0] == same_as)
            assert res["prob_ai"] == det.predict(other[2])[0].prob_ai
    assert client.get("/healthz").status_code == 200


# --- batching -------------------------------------------------------------------------------------

def test_concurrent_requests_are_batched_and_equal(det):
    app = create_app(ServeSettings(ui=False), detector=det)
    worker = app.state.service.worker
    datas = [p.read_bytes() for p in SAMPLES] * 4

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            rs = await asyncio.gather(*(c.post("/v1/detect", files={"files": (f"{i}.jpg", d)})
                                        for i, d in enumerate(datas)))
        return [r.json()["results"][0]["prob_ai"] for r in rs]

    probs = asyncio.run(go())
    assert probs == [p.prob_ai for p in det.predict(datas)]
    assert worker.images == len(datas) and worker.calls < len(datas)  # several requests shared a model call


# --- a real server process --------------------------------------------------------------------------

def test_real_server_survives_the_corpus_and_leaves_no_files(server):
    url, proc, tmp = server
    with httpx.Client(base_url=url, timeout=60) as c:
        for cid, name, data, expect, _ in CORPUS:
            r = c.post("/v1/detect", files={"files": (name, data)})
            assert r.status_code == {"reject": 422, "bad-request": 400, "verdict": 200}[expect], (cid, r.text)
        # a 6 MB upload is spooled past memory by the multipart parser: it must still be gone afterwards
        big = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
        import io
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "PNG")
        assert len(buf.getvalue()) > 5_000_000
        assert c.post("/v1/detect", files={"files": ("../../big.png", buf.getvalue())}).status_code == 200
        assert c.get("/healthz").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
    assert proc.poll() is None
    # the page's example images are copied into Gradio's cache at start-up; nothing else may remain
    # (and ONNX Runtime's telemetry session id, `.ses`, written at import: no upload data)
    leftovers = [p for p in tmp.rglob("*") if p.is_file() and p.name not in {s.name for s in SAMPLES} | {".ses"}]
    assert leftovers == [], leftovers


# --- the page's cards (the HTML; the browser test drives the page itself) ----------------------------

def test_page_cards_escape_every_string_from_clients_and_files():
    """File names, metadata values, reasons, warnings, generator notes and errors are data, never markup."""
    import html

    from synthcheck.serving.cards import cards

    evil = "<img src=x onerror=alert(1)>\"'&<script>alert(2)</script>.jpg"
    ok = {"file": evil, "prob_ai": 0.9, "verdict": "ai", "model": evil, "route": evil, "uncertain_range": [0.3, 0.8],
          "reason": evil, "warnings": [evil],
          "evidence": [dict.fromkeys(("source", "field", "value", "indicates", "strength", "note"), evil)],
          "generator": {"name": evil, "source": "metadata", "evidence": evil}}
    page = cards([ok, {"file": evil, "error": evil}])
    assert "<img" not in page and "<script" not in page and "onerror=alert(1)>" not in page
    assert page.count(html.escape(evil)) >= 8
    assert "likely AI-generated" in page and "could not check this file" in page


def test_page_names_models_in_plain_words(det):
    from synthcheck.serving.cards import _members, model_words

    words = {m.split(":")[0]: model_words(d) for m, d in _members(det).items()}
    assert words == {"default": "CIFAKE 32-px model (FastNet)",
                     "photo": "full-size photo model (MobileNetV2, 16 tiles of 128 px)"}
