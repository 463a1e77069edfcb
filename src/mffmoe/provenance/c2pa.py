"""C2PA manifest stores (Content Credentials), read and validated by c2pa-python, offline.

The Reader runs with remote manifest fetching and OCSP off, so reading never touches the network; a
manifest that lives only at a remote URL reads as an error saying so. The validation state is c2pa's
own (Invalid / Valid / Trusted) with its failure codes: without a configured trust list, a genuine signer
reads `signingCredential.untrusted`, reported as is. Without c2pa-python installed, the check is marked
`not_checked`, never failed.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from mffmoe.provenance.findings import Findings
from mffmoe.provenance.schema import C2PAAction, C2PAInfo, C2PAStatus

OFFLINE_SETTINGS: dict[str, Any] = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_after_reading": True},
}
_contexts: dict[tuple[int, str | None], Any] = {}  # by process (a forked worker makes its own) and trust
_lock = threading.Lock()


@dataclass
class C2PAResult:
    status: C2PAStatus
    info: C2PAInfo | None = None
    found: Findings = field(default_factory=lambda: Findings("c2pa"))


def available() -> bool:
    """Whether C2PA can be checked here (c2pa-python and its native library load)."""
    try:
        import c2pa  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _context(trust_anchors_pem: str | None) -> Any:
    """One offline Context per process and trust setting (a Context may serve many Readers)."""
    import c2pa
    key = (os.getpid(), trust_anchors_pem)
    with _lock:
        if key not in _contexts or not _contexts[key].is_valid:
            settings = json.loads(json.dumps(OFFLINE_SETTINGS))
            if trust_anchors_pem:
                settings["trust"] = {"user_anchors": trust_anchors_pem}
                settings["verify"]["verify_trust"] = True
            _contexts[key] = c2pa.Context.from_dict(settings)
        return _contexts[key]


def read_c2pa(path: str | os.PathLike[str], trust_anchors_pem: str | None = None) -> C2PAResult:
    """The manifest store of `path`: found / absent / not_checked / error, never an exception.

    `trust_anchors_pem`: extra root certificates (PEM) to trust, e.g. the C2PA trust list or a test root.
    """
    try:
        import c2pa
    except (ImportError, OSError) as e:  # not installed, or its native library does not load here
        result = C2PAResult("not_checked")
        why = "is not installed" if isinstance(e, ImportError) else f"does not load ({e})"
        result.found.notes.append(f"C2PA not checked: c2pa-python {why} (pip install c2pa-python)")
        return result
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader.try_create(None, f, None, _context(trust_anchors_pem))
            if reader is None:
                return C2PAResult("absent")
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError.NotSupported as e:
        result = C2PAResult("not_checked")
        result.found.notes.append(f"C2PA not checked: c2pa does not read this format ({_msg(e)})")
        return result
    except c2pa.C2paError.RemoteManifest as e:
        result = C2PAResult("error")
        result.found.error(f"the C2PA manifest is remote and was not fetched (offline): {_msg(e)}")
        return result
    except Exception as e:  # a manifest store is there but corrupt, or c2pa itself failed
        text = _msg(e)
        if "no JUMBF" in text or "ManifestNotFound" in type(e).__name__:
            return C2PAResult("absent")
        result = C2PAResult("error")
        result.found.error(f"C2PA check failed (a corrupt manifest store or file): {type(e).__name__}: {text}")
        return result
    result = C2PAResult("found")
    try:
        result.info = _info(store, result.found)
    except Exception as e:  # a manifest whose JSON is not shaped as c2pa documents it
        result.found.error(f"C2PA manifest store read but not understood: {type(e).__name__}: {e}")
    return result


def _msg(e: BaseException) -> str:
    return " ".join(str(e).split())[:500]


def _info(store: dict[str, Any], found: Findings) -> C2PAInfo:
    manifests: dict[str, Any] = store.get("manifests") or {}
    label = store.get("active_manifest")
    active: dict[str, Any] = manifests.get(label) or {} if label else {}
    info = C2PAInfo(active_manifest=label, manifest_count=len(manifests))
    info.claim_generator = active.get("claim_generator") or _generator_info(active.get("claim_generator_info"))
    info.title = active.get("title")
    info.format = active.get("format")
    sig = active.get("signature_info") or {}
    info.signer = sig.get("common_name")
    info.issuer = sig.get("issuer")
    info.signature_alg = sig.get("alg")
    info.signing_time = sig.get("time")
    info.ingredients = [str(i.get("title")) for i in active.get("ingredients") or [] if i.get("title")]
    info.validation_state = store.get("validation_state")
    statuses = store.get("validation_status") or _failures(store.get("validation_results"))
    for s in statuses:
        if isinstance(s, dict) and s.get("code"):
            info.validation_codes.append(str(s["code"]))
            if s.get("explanation"):
                info.validation_errors.append(str(s["explanation"]))
    for mlabel, manifest in manifests.items():
        where = "active" if mlabel == label else mlabel
        for assertion in manifest.get("assertions") or []:
            if str(assertion.get("label", "")).startswith("c2pa.actions"):
                for act in (assertion.get("data") or {}).get("actions") or []:
                    info.actions.append(_action(act, where))
            elif where == "active" and str(assertion.get("label", "")).startswith("stds.schema-org.CreativeWork"):
                for author in (assertion.get("data") or {}).get("author") or []:
                    if isinstance(author, dict) and author.get("name"):
                        found.add("author", author["name"])
    for st in dict.fromkeys(a.digital_source_type for a in info.actions if a.digital_source_type):
        assert st is not None
        info.digital_source_types.append(st)

    found.add("claim_generator", info.claim_generator or "", hint=True)
    found.add("title", info.title or "")
    found.add("signer", info.signer or "")
    found.add("issuer", info.issuer or "")
    found.add("signature_alg", info.signature_alg or "")
    found.add("signing_time", info.signing_time or "")
    found.add("validation_state", info.validation_state or "")
    if info.validation_codes:
        found.add("validation_codes", ", ".join(info.validation_codes))
    for i, a in enumerate(info.actions):
        prefix = f"actions[{i}]" if a.manifest == "active" else f"ingredient {a.manifest} actions[{i}]"
        found.add(prefix, a.action + (f" ({a.digital_source_type})" if a.digital_source_type else ""))
        if a.digital_source_type:
            found.add(f"{prefix}.digitalSourceType", a.digital_source_type, evidence=False, source_type=True)
        if a.software_agent:
            found.add(f"{prefix}.softwareAgent", a.software_agent, evidence=False, hint=True)
    return info


def _generator_info(value: Any) -> str | None:
    if not isinstance(value, list):
        return None
    names = [" ".join(str(g.get(k)) for k in ("name", "version") if g.get(k)) for g in value if isinstance(g, dict)]
    return ", ".join(n for n in names if n) or None


def _failures(results: Any) -> list[Any]:
    if not isinstance(results, dict):
        return []
    active = results.get("activeManifest") or {}
    return list(active.get("failure") or [])


def _action(act: dict[str, Any], where: str) -> C2PAAction:
    agent = act.get("softwareAgent")
    if isinstance(agent, dict):
        agent = " ".join(str(agent.get(k)) for k in ("name", "version") if agent.get(k)) or None
    return C2PAAction(action=str(act.get("action", "?")), digital_source_type=act.get("digitalSourceType"),
                      software_agent=str(agent) if agent else None, when=act.get("when"), manifest=where)
