"""Names of AI generators as they appear in Software, CreatorTool, claim generators and text chunks, and
the IPTC digital source types that declare AI or synthetic media.

A hint is weaker than a declaration: a name in a Software tag says which tool last wrote the file (Adobe
Photoshop with Firefly writes "Adobe Photoshop", not "Firefly"), so a missing hint means nothing.
"""
from __future__ import annotations

import re

from mffmoe.provenance.schema import AIClaim, ClaimKind, Source

LABELS = {"c2pa": "C2PA", "exif": "EXIF", "xmp": "XMP", "iptc": "IPTC", "png_text": "PNG text",
          "container": "container tag", "file": "file"}
IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

# IPTC Digital Source Type vocabulary (https://cv.iptc.org/newscodes/digitalsourcetype/): the codes that
# declare AI or synthetic media, and what each means. All others (digitalCapture, computationalCapture,
# negativeFilm, positiveFilm, print, humanEdits, algorithmicallyEnhanced, digitalCreation, dataDrivenMedia,
# screenCapture, virtualRecording, composite, compositeCapture, ...) are recorded but are not AI claims.
AI_SOURCE_TYPES: dict[str, tuple[ClaimKind, str]] = {
    "trainedAlgorithmicMedia": ("ai_generated", "made by a trained model, i.e. generative AI"),
    "trainedAlgorithmicData": ("ai_generated", "made by a trained model (an older C2PA code)"),
    "compositeWithTrainedAlgorithmicMedia": ("ai_composite", "a composite with AI-generated elements"),
    "compositeSynthetic": ("synthetic", "a composite with synthetic elements, which IPTC's guidance also "
                                        "used for generative AI edits"),
    "algorithmicMedia": ("synthetic", "created purely by an algorithm, not from a capture"),
}

# (generator, pattern): case-insensitive, matched against short tool/description fields only.
_GENERATORS: list[tuple[str, re.Pattern[str]]] = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in [
    ("Midjourney", r"midjourney"),
    ("OpenAI DALL-E", r"\bdall[\s\-·.]?e\b"),
    ("OpenAI", r"\bopenai\b|\bchatgpt\b|\bgpt-4o\b|\bsora\b"),
    ("Stable Diffusion", r"stable[\s\-_]?diffusion|\bsdxl\b|stability\.?ai|automatic1111|\bsd[\s\-_]?webui\b"),
    ("ComfyUI", r"comfyui"),
    ("InvokeAI", r"invoke\s?ai"),
    ("Fooocus", r"\bfooocus\b"),
    ("NovelAI", r"novel\s?ai"),
    ("Adobe Firefly", r"firefly"),
    ("Google Imagen", r"\bimagen\b"),
    ("Google Gemini", r"\bgemini\b"),
    ("Google AI", r"made with google ai|google ai\b"),
    ("Google Veo", r"\bveo\b"),
    ("Microsoft Designer / Bing Image Creator", r"bing image creator|microsoft designer|\bcopilot\b"),
    ("FLUX (Black Forest Labs)", r"black forest labs|\bflux\.1\b|\bflux[\s\-_](?:dev|schnell|pro)\b"),
    ("Leonardo.Ai", r"leonardo\.?ai"),
    ("Ideogram", r"ideogram"),
    ("Runway", r"\brunway(?:ml)?\b"),
    ("Pika", r"\bpika\s?labs\b|\bpika\.art\b"),
    ("Kling", r"\bkling\b"),
    ("Luma Dream Machine", r"luma\s?ai|dream machine"),
    ("xAI Grok / Aurora", r"\bgrok\b|\bxai aurora\b"),
    ("Craiyon", r"craiyon"),
    ("NightCafe", r"nightcafe"),
    ("Playground AI", r"playground\s?ai|playgroundai"),
    ("Krea", r"\bkrea\.?ai\b"),
    ("Synthesia", r"synthesia"),
    ("DeepFaceLab", r"deepfacelab"),
    ("FaceFusion / roop", r"facefusion|\broop\b"),
]]


def generator_in(text: str) -> str | None:
    """The AI generator named in a short tool or description field, or None."""
    head = text[:4096]
    for name, pattern in _GENERATORS:
        if pattern.search(head):
            return name
    return None


def hint_claim(source: Source, field: str, value: str) -> AIClaim | None:
    """A generator_hint claim when `value` names a known AI generator."""
    name = generator_in(value)
    if name is None:
        return None
    return AIClaim(source=source, field=field, value=shorten(value), kind="generator_hint",
                   description=f"{LABELS.get(source, source)} {field} '{shorten(value, 60)}' names {name}")


def source_type_code(value: str) -> str:
    """'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia' -> 'trainedAlgorithmicMedia'."""
    value = value.strip()
    return value.rsplit("/", 1)[-1] if "/" in value else value


def source_type_claim(source: Source, field: str, value: str) -> AIClaim | None:
    """An AI/synthetic claim when `value` is one of the IPTC digital source types that declare it."""
    code = source_type_code(value)
    if code not in AI_SOURCE_TYPES:
        return None
    kind, meaning = AI_SOURCE_TYPES[code]
    label = LABELS.get(source, source)
    return AIClaim(source=source, field=field, value=value, kind=kind,
                   description=f"{label} digitalSourceType {code}: {meaning}")


def shorten(value: str, limit: int = 300) -> str:
    """Evidence values for reports: one line, at most `limit` characters."""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


_SD_PARAMETERS = re.compile(r"\bSteps:\s*\d+.*\b(?:Sampler|CFG scale|Seed):", re.IGNORECASE | re.DOTALL)


def is_sd_parameters(text: str) -> bool:
    """AUTOMATIC1111 / Forge / SD.Next generation settings ("...Steps: 20, Sampler: Euler a, CFG scale: 7,
    Seed: ...") as written to a PNG `parameters` chunk or a JPEG's EXIF UserComment."""
    return bool(_SD_PARAMETERS.search(text[:65_536]))


def parameters_claim(source: Source, field: str, value: str) -> AIClaim | None:
    if not is_sd_parameters(value):
        return None
    return AIClaim(source=source, field=field, value=shorten(value), kind="generator_hint",
                   description=f"{LABELS.get(source, source)} {field}: Stable Diffusion generation settings "
                               "(AUTOMATIC1111 style)")
