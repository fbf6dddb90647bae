"""The verdict of ``hpa synth report``: sentences read off the figures by fixed rules, the table of
figures beside their references, and ``report.md``. Pure functions of the ``report.json`` dict."""
from __future__ import annotations

from hpa.classes import CLASS_NAMES

#: agreement at least this multiple of the shuffled-label control reads as label-consistent
CONSISTENT_RATIO = 1.5


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"
    return f"{v:.{digits}f}"


def verdict_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """The verdict table: ``(metric, synthetic, real-vs-real floor, shuffled-label control)`` rows."""
    rows = [("label agreement (macro F1 of the judge)", _fmt(res["macro_f1"]), _fmt(res.get("real_heldout_f1")),
             _fmt(res["shuffled_control_f1"]))]
    q = res.get("quality")
    if q:
        n = q["n_per_set"]
        for m, name, d in (("fid", "FID", 2), ("kid", "KID", 4), ("precision", "precision (k=3)", 3),
                           ("recall", "recall (k=3)", 3)):
            rows.append((f"{name}, {n} vs {n} images", _fmt(q["synthetic"][m], d), _fmt(q["floor"][m], d), "—"))
    cs = res.get("per_class_summary", {})
    if cs.get("n_classes"):
        for m, name, d in (("fid", "FID", 2), ("kid", "KID", 4), ("precision", "precision", 3), ("recall", "recall", 3)):
            rows.append((f"per-class {name}, mean of {cs['n_classes']} classes", _fmt(cs["synthetic"][m], d),
                         _fmt(cs["floor"][m], d), _fmt(cs["control"][m], d)))
    if "inception_fid" in res:
        rows.append(("RGB Inception FID (all images)", _fmt(res["inception_fid"], 2), "—", "—"))
    mem = f"{res['memorization_cosine_mean']:.3f} (max {res['memorization_cosine_max']:.3f}, " \
          f"{100 * res['share_above_0.95']:.1f}% > 0.95)"
    ref = res.get("real_heldout_memorization")
    ref_s = f"{ref['mean']:.3f} (max {ref['max']:.3f}, {100 * ref['share_above_0.95']:.1f}% > 0.95)" if ref else "—"
    rows.append(("memorisation: cosine to the nearest real training image", mem, ref_s, "—"))
    return rows


def verdict(res: dict) -> list[str]:
    """Plain sentences read off the figures (the rules are stated in docs/synth.md)."""
    out = []
    ratio = res["macro_f1"] / max(res["shuffled_control_f1"], 1e-9)
    out.append(f"**{'Label-consistent' if ratio >= CONSISTENT_RATIO else 'Not label-consistent'}**: agreement "
               f"{res['macro_f1']:.3f} is {ratio:.1f}x the shuffled-label control"
               + (f" and {res['macro_f1'] / max(res['real_heldout_f1'], 1e-9):.0%} of what real held-out "
                  f"images score" if res.get("real_heldout_f1") else "") + ".")
    q = res.get("quality")
    if q:
        s, f = q["synthetic"], q["floor"]
        out.append(f"**Fidelity**: FID {s['fid'][0]:.2f} against a real-vs-real floor of {f['fid'][0]:.2f} "
                   f"({s['fid'][0] / max(f['fid'][0], 1e-9):.1f}x); precision {s['precision'][0]:.2f} "
                   f"(floor {f['precision'][0]:.2f}).")
        out.append(f"**Diversity**: recall {s['recall'][0]:.2f} (floor {f['recall'][0]:.2f}).")
    cs = res.get("per_class_summary", {})
    if cs.get("n_classes"):
        out.append(f"**Per class**: closer to the real images of their own class than the shuffled-label "
                   f"control in {cs['closer_than_control']['fid']} of {cs['n_classes']} classes by FID, "
                   f"{cs['closer_than_control']['kid']} by KID.")
    ref = res.get("real_heldout_memorization")
    closer = ref is not None and res["memorization_cosine_mean"] > ref["mean"]
    out.append(f"**Memorisation**: {100 * res['share_above_0.95']:.1f}% of the images have cosine > 0.95 to a "
               f"training image" + (f"; on average they are {'closer to' if closer else 'no closer to'} the "
                                     f"training images than real held-out images are" if ref else "") + ".")
    return out


def markdown(res: dict, title: str) -> str:
    """``report.md``: the verdict, its table and the per-class table."""
    lines = [f"# {title}", "", *[f"- {v}" for v in verdict(res)], "",
             "| metric | synthetic | real vs real (floor) | shuffled-label control |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in verdict_rows(res)]
    lines += ["", f"Judge: {res['judge']}. Reference: {res.get('quality_reference', 'none')}. "
              "Values are mean ± sd over random halves of the reference (`repeats` in report.json); "
              "the floor is one half against the other, the synthetic set (and the control) is subsampled "
              "to the same size and compared with the same half.", ""]
    per = res.get("per_class_quality") or []
    if any(per):
        lines += ["| class | real / synthetic images | FID synthetic | floor | control | recall synthetic "
                  "| floor | control | agreement F1 |", "|---|---|---|---|---|---|---|---|---|"]
        for c, p in enumerate(per):
            if p:
                f1 = res["per_class_f1"][c]
                lines.append(f"| {c} {CLASS_NAMES[c]} | {p['n_real']} / {p['n_synthetic']} | "
                             f"{_fmt(p['synthetic']['fid'], 2)} | {_fmt(p['floor']['fid'], 2)} | "
                             f"{_fmt(p['control']['fid'], 2)} | {_fmt(p['synthetic']['recall'], 2)} | "
                             f"{_fmt(p['floor']['recall'], 2)} | {_fmt(p['control']['recall'], 2)} | {_fmt(f1)} |")
        lines.append("")
    # per_class_quality.png exists only when a class had enough images (hpa.synthetic.report)
    figures = ["per_class_agreement.png"] + (["per_class_quality.png"] if any(per) else []) + \
        ["memorization.png", "grid.png"]
    lines.append(f"Figures: {', '.join(f'`{f}`' for f in figures)}.")
    return "\n".join(lines) + "\n"
