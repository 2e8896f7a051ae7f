"""What `auto` gives a model of a given size: learning rate, epochs, and how its weights are held."""

from __future__ import annotations

import dataclasses
import math

from ..core.params import AUTO, SMALL_MODEL_PARAMETERS, TrainParams

# the train.* settings whose `auto` the model's size decides
AUTO_BY_SIZE = ("learning_rate", "epochs", "dequantize", "float32_norms")


@dataclasses.dataclass(frozen=True)
class SizeSchedule:
    """What `auto` gives a model of up to `max_parameters`: learning rate, epochs, and whether to
    train on its 4-bit weights held in 16 bits (`dequantize`) with float32 norms (`float32_norms`)."""

    max_parameters: float
    learning_rate: float
    epochs: float
    dequantize: bool
    float32_norms: bool


# A 135M model needs a high rate and many epochs to learn SQL at all; a 0.5B code model already
# writes SQL and over-fits that schedule. Up to 1B parameters the 4-bit weights are held as 16-bit
# numbers with norms in the compute dtype: faster, and within the run-to-run spread of PEFT's
# recipe (docs/RESULTS.md, "Training speed"). Larger models keep QLoRA as PEFT prepares it: the
# 16-bit copy costs 1.5 bytes a weight more, untried on a 6 GB card past 1B parameters.
SIZE_SCHEDULES = (
    SizeSchedule(max_parameters=SMALL_MODEL_PARAMETERS, learning_rate=1e-3, epochs=6, dequantize=True,
                 float32_norms=False),
    SizeSchedule(max_parameters=1e9, learning_rate=2e-4, epochs=2, dequantize=True, float32_norms=False),
    SizeSchedule(max_parameters=math.inf, learning_rate=2e-4, epochs=2, dequantize=False, float32_norms=True),
)


def parameter_count(model) -> int:
    """Parameters of the model as trained from, before quantization packed them."""
    total = 0
    for param in model.parameters():
        shape = getattr(getattr(param, "quant_state", None), "shape", None)  # bitsandbytes 4-bit
        total += math.prod(shape) if shape is not None else param.numel()
    return total


def resolved_schedule(train: TrainParams, parameters: int) -> TrainParams:
    """`train` with each `auto` setting replaced by the model size's schedule."""
    size = next(s for s in SIZE_SCHEDULES if parameters <= s.max_parameters)
    return dataclasses.replace(train, **{name: getattr(size, name) for name in AUTO_BY_SIZE
                                         if getattr(train, name) == AUTO})


def dequantizes(model, train: TrainParams) -> bool:
    """Whether to train on the 4-bit weights turned back into 16-bit numbers (train.dequantize).

    bitsandbytes multiplies by a 4-bit weight by turning it back into 16 bits first, in every
    forward and backward pass; holding it that way once gives the same products with fewer
    kernels, for the memory of a 16-bit copy. 8-bit layers multiply in 8 bits, so they are kept.
    """
    return bool(train.dequantize) and getattr(model, "is_loaded_in_4bit", False)
