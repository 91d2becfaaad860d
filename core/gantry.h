#pragma once
// Umbrella header: everything a program using gantry needs.
#include "gantry/core/autograd.h"
#include "gantry/core/device.h"
#include "gantry/core/ops.h"
#include "gantry/core/random.h"
#include "gantry/core/tensor.h"
#include "gantry/core/version.h"
