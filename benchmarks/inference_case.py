"""One inference benchmark case in a fresh process: ``python -m benchmarks.inference_case '<json>'``.

The parent (:mod:`benchmarks.inference`) starts one process per case, because a process's peak
resident memory only grows and the allocator keeps freed memory: cases sharing a process would
inherit each other's peaks. The case is a JSON object with ``task`` (``pair``, ``profile`` or
``folder``), ``checkpoint``, ``device``, ``mode`` and the task's inputs; the last line printed is the
JSON record.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from typing import Any

import torch

from benchmarks.timing import PeakMemory, synchronize, time_call


def peak_memory(device: torch.device) -> dict[str, Any]:
    """The process's peak resident memory (and the peak CUDA memory on CUDA)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    record: dict[str, Any] = {"peak_rss_bytes": rss, "peak_rss_gib": rss / 2**30,
                              "peak_rss_method": "getrusage ru_maxrss of the whole process"}
    if device.type == "cuda":
        record["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
        record["peak_cuda_gib"] = record["peak_cuda_bytes"] / 2**30
    return record


def pair_case(case: dict[str, Any]) -> dict[str, Any]:
    """Time ``Fuser.fuse`` on one pair: the first call, then ``warmup`` more and ``repeats`` timed ones."""
    from uaafusion.data.io import read_image, split_luma_chroma
    from uaafusion.fuser import Fuser

    fuser = Fuser.from_checkpoint(case["checkpoint"], device=case["device"], mode=case["mode"])
    ir, vi = read_image(case["ir"]), read_image(case["vi"])
    synchronize(fuser.device)
    started = time.perf_counter()
    fused = fuser.fuse(ir, vi)
    synchronize(fuser.device)
    first_call = time.perf_counter() - started
    summary, fused = time_call(lambda: fuser.fuse(ir, vi), fuser.device, case["repeats"], case["warmup"])
    ir_luma, vi_luma = (split_luma_chroma(image)[0][None].to(fuser.device) for image in (ir, vi))
    mask = fuser.fusion.predicted_mask(fuser.segmenter, ir_luma, vi_luma)
    return {**summary, "first_call_s": first_call, "output_shape": list(fused.shape),
            "classes_present": int((mask.flatten(2).amax(2) > 0).sum()), "mode": fuser.mode,
            "tile_size": fuser.tile_size, **peak_memory(fuser.device)}


def profile_case(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Where the time and the memory of one pair go: each part of a fused pair timed on its own, with
    the growth of the peak resident memory during its first call."""
    import uaafusion.models.unfolding as unfolding
    from uaafusion.attribution import segmentation_score_gradient
    from uaafusion.data.io import read_image, split_luma_chroma
    from uaafusion.fuser import Fuser

    fuser = Fuser.from_checkpoint(case["checkpoint"], device=case["device"], mode="exact")
    fusion, segmenter, device = fuser.fusion, fuser.segmenter, fuser.device
    state: dict[str, Any] = {}

    def read() -> None:
        state["ir"], state["vi"] = read_image(case["ir"]), read_image(case["vi"])
        state["ir_luma"], state["vi_luma"] = (split_luma_chroma(state[key])[0][None].to(device)
                                              for key in ("ir", "vi"))

    def mask() -> None:
        state["mask"] = fusion.predicted_mask(segmenter, state["ir_luma"], state["vi_luma"])

    def attribution() -> None:
        state["weights"] = fusion.attribution_weights(segmenter, state["ir_luma"], state["vi_luma"], state["mask"])

    def gradient() -> None:
        average = (state["ir_luma"] + state["vi_luma"]) / 2
        state["gradient"] = segmentation_score_gradient(segmenter, average, state["mask"])

    def proximal() -> None:
        original = unfolding.segmentation_score_gradient
        unfolding.segmentation_score_gradient = lambda *args: state["gradient"]
        try:
            with torch.no_grad():
                fusion(state["ir_luma"], state["vi_luma"], segmenter, mask=state["mask"], weights=state["weights"])
        finally:
            unfolding.segmentation_score_gradient = original

    def whole(mode: str):
        def run() -> None:
            fuser.mode = mode
            fuser.fuse(state["ir"], state["vi"])
        return run

    parts = {"read_pair": read, "class_mask": mask, "attribution_weights": attribution,
             "segmenter_gradient_one_stage": gradient, "proximal_networks_all_stages": proximal,
             "whole_pair_exact": whole("exact"), "whole_pair_fast": whole("fast")}
    records: dict[str, dict[str, Any]] = {}
    for name, part in parts.items():
        with PeakMemory(device) as peak:
            part()
        summary, _ = time_call(part, device, case["repeats"], 0)
        records[name] = {**summary, **peak.as_dict(), "peak_memory_call": "first call of this part"}
    stages = getattr(fusion, "stages", 1)
    records["segmenter_gradient_one_stage"]["calls_per_pair"] = {"exact": stages, "fast": 1}
    total = records["whole_pair_exact"]["median_s"]
    for record in records.values():
        record["share_of_exact_pair"] = record["median_s"] / total
    return records


def folder_case(case: dict[str, Any]) -> dict[str, Any]:
    """``Fuser.fuse_folder`` over a folder of pairs: seconds in all, pairs per second, peak memory."""
    from uaafusion.fuser import Fuser

    fuser = Fuser.from_checkpoint(case["checkpoint"], device=case["device"], mode=case["mode"])
    with tempfile.TemporaryDirectory(prefix="uaafusion-bench-") as out:
        synchronize(fuser.device)
        started = time.perf_counter()
        result = fuser.fuse_folder(case["ir_dir"], case["vi_dir"], out, progress=False)
        synchronize(fuser.device)
        seconds = time.perf_counter() - started
    pairs = len(result.written)
    return {"seconds": seconds, "pairs": pairs, "failures": len(result.failures),
            "pairs_per_s": pairs / seconds, "seconds_per_pair": seconds / max(1, pairs), "mode": fuser.mode,
            **peak_memory(fuser.device)}


TASKS = {"pair": pair_case, "profile": profile_case, "folder": folder_case}


def main(argv: list[str]) -> int:
    case = json.loads(argv[0])
    if case.get("threads"):
        torch.set_num_threads(int(case["threads"]))
    record = TASKS[case["task"]](case)
    print(json.dumps(record, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

