"""One epoch of each kind: the segmenter's, the fusion network's, and the joint schedule's.

Images are ``(B, 1, H, W)`` in [0, 1], labels ``int64 (B, H, W)``. Each epoch returns the mean of
its steps' losses; every step is logged (:func:`~uaafusion.training.loop.log_step`).

Degradation-aware training (``degrade.kinds``): the networks see the degraded crops, the fusion
losses compare with the clean ones (:func:`~uaafusion.training.loop.loss_targets`), the segmenter
learns the same labels from the degraded sources, and each step logs the share of every kind.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from uaafusion import ddp
from uaafusion.training.context import TrainingContext
from uaafusion.training.loop import (
    RunningMeans,
    autocast,
    check_finite,
    clip_gradients,
    degradation_shares,
    log_step,
    loss_targets,
    set_trainable,
    train_batches,
)
from uaafusion.training.round_stores import attribution_mask, crop_stored


def segmenter_epoch(context: TrainingContext, unit: str, fused_store: Mapping[str, torch.Tensor] | None,
                    ) -> dict[str, float]:
    """One epoch of the segmenter on the sources (and on fused images when ``fused_store`` is given)."""
    params = context.params
    segmenter = context.segmenter
    set_trainable(context.fusion, False)
    set_trainable(segmenter, True)
    segmenter.train()
    model = ddp.wrap(segmenter)  # several processes: gradients averaged over them
    optimizer = context.objects.optimizers["segmenter"]
    means = RunningMeans()
    for batch in train_batches(context, unit):
        inputs = {"ir": batch["ir"], "vi": batch["vi"]}
        if fused_store is not None:
            inputs["fused"] = crop_stored(fused_store, batch, context.device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(context):
            loss, losses = segmenter_loss(context, inputs, batch["label"], model)
        check_finite(context, unit, loss)
        loss.backward()
        clip_gradients(segmenter, params.train.grad_clip)
        optimizer.step()
        terms = {"loss": loss.item(), **{f"loss_{name}": value.item() for name, value in losses.items()},
                 **degradation_shares(params, batch)}
        means.add(log_step(context, unit, terms))
    return means.means()


def segmenter_loss(context: TrainingContext, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor,
                   model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the segmenter ``model`` (the context's segmenter, or it in DistributedDataParallel)
    on every input image ``(B, 1, H, W)`` against the same ``labels`` (cross-entropy with the class
    weights, plus ``loss.dice`` x Dice; docs/method.md §3).

    Returns ``(sum over the inputs, {input name: its loss})``.
    """
    from uaafusion.losses import segmentation_loss

    params = context.params
    losses = {name: segmentation_loss(model(image), labels, params.data.ignore_index, params.loss.dice,
                                      context.class_weights)
              for name, image in inputs.items()}
    return torch.stack(list(losses.values())).sum(), losses


def fusion_epoch(context: TrainingContext, unit: str, weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """One epoch of the fusion network with this round's cached ``weights``; the segmenter is frozen
    but passes gradients to ``F``. The class mask behind the attention is the crop's labels."""
    from uaafusion.attribution import frozen_segmenter, labels_to_one_hot
    from uaafusion.losses import FusionLoss
    from uaafusion.models.registry import fusion_conditioning

    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    set_trainable(segmenter, False)
    segmenter.eval()
    frozen = frozen_segmenter(segmenter)  # the segmenter does not change during this stage
    set_trainable(fusion, True)
    fusion.train()
    model = ddp.wrap(fusion)
    loss_function = FusionLoss(params.loss, params.data.ignore_index, context.class_weights)
    optimizer = context.objects.optimizers["fusion"]
    means = RunningMeans()
    for batch in train_batches(context, unit):
        ir, vi, labels, roi = batch["ir"], batch["vi"], batch["label"], batch["roi"]
        ir_target, vi_target = loss_targets(batch)
        weight_ir = crop_stored(weights, batch, context.device)
        mask = labels_to_one_hot(labels, params.data.num_classes, params.data.ignore_index)
        conditioning = fusion_conditioning(fusion, batch)
        optimizer.zero_grad(set_to_none=True)
        with autocast(context):
            output = model(ir, vi, segmenter, mask=mask, weights=(weight_ir, 1.0 - weight_ir), **conditioning)
            terms = loss_function(output, ir_target, vi_target, frozen(output.fused), labels, roi,
                                  conditioning.get("degradation"))
        loss = terms["total"]
        check_finite(context, unit, loss)
        loss.backward()
        clip_gradients(fusion, params.train.grad_clip)
        optimizer.step()
        values = {f"loss_{key}" if key != "total" else "loss": float(value.detach()) for key, value in terms.items()}
        values.update(degradation_shares(params, batch))
        means.add(log_step(context, unit, values))
    set_trainable(segmenter, True)
    return means.means()


def joint_epoch(context: TrainingContext, unit: str) -> dict[str, float]:
    """One epoch of the joint schedule: per batch a fusion step (weights recomputed, the segmenter
    changes every step), then a segmenter step on the detached fused image and the sources."""
    from uaafusion.attribution import frozen_segmenter, modality_weights
    from uaafusion.losses import FusionLoss
    from uaafusion.models.registry import fusion_conditioning

    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    loss_function = FusionLoss(params.loss, params.data.ignore_index, context.class_weights)
    fusion_optimizer = context.objects.optimizers["fusion"]
    segmenter_optimizer = context.objects.optimizers["segmenter"]
    attribution = params.attribution
    set_trainable(fusion, True)
    set_trainable(segmenter, True)
    fusion_model, segmenter_model = ddp.wrap(fusion), ddp.wrap(segmenter)  # each keeps its parameters in step
    means = RunningMeans()
    for batch in train_batches(context, unit):
        ir, vi, labels, roi = batch["ir"], batch["vi"], batch["label"], batch["roi"]
        ir_target, vi_target = loss_targets(batch)
        # Fusion step, segmenter frozen.
        set_trainable(segmenter, False)
        segmenter.eval()
        set_trainable(fusion, True)
        fusion.train()
        mask = attribution_mask(fusion, segmenter, ir, vi, labels, params.data.num_classes, params.data.ignore_index)
        weight_ir, weight_vi = modality_weights(segmenter, ir, vi, mask, attribution.steps, method=attribution.method,
                                                internal_batch_size=attribution.internal_batch_size,
                                                engine=attribution.engine, scale=attribution.scale)
        conditioning = fusion_conditioning(fusion, batch)
        fusion_optimizer.zero_grad(set_to_none=True)
        with autocast(context):
            output = fusion_model(ir, vi, segmenter, mask=mask, weights=(weight_ir, weight_vi), **conditioning)
            terms = loss_function(output, ir_target, vi_target, frozen_segmenter(segmenter)(output.fused),
                                  labels, roi, conditioning.get("degradation"))
        check_finite(context, unit, terms["total"])
        terms["total"].backward()
        clip_gradients(fusion, params.train.grad_clip)
        fusion_optimizer.step()
        # Segmenter step, fusion frozen, fused image detached.
        set_trainable(fusion, False)
        set_trainable(segmenter, True)
        segmenter.train()
        segmenter_optimizer.zero_grad(set_to_none=True)
        with autocast(context):
            loss, _ = segmenter_loss(context, {"fused": output.fused.detach(), "ir": ir, "vi": vi}, labels,
                                     segmenter_model)
        check_finite(context, unit, loss)
        loss.backward()
        clip_gradients(segmenter, params.train.grad_clip)
        segmenter_optimizer.step()
        values = {"loss": float(terms["total"].detach()), "loss_segmenter": float(loss.detach()),
                  **degradation_shares(params, batch)}
        means.add(log_step(context, unit, values))
    set_trainable(fusion, True)
    return means.means()
