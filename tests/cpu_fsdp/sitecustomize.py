"""FSDP on CPU processes, for the tests: Python imports this file at start-up in every process of a run that
tests/conftest.py launches under a cpu_fsdp* accelerate config (this folder is put first on PYTHONPATH for those
runs only; production code never sees it).

accelerate turns an FSDP config into FSDP only where the process group is a GPU one: AcceleratorState.__init__
switches the distributed type to FSDP inside `elif self.distributed_type in [MULTI_GPU, MULTI_NPU, ...]`, a list
without MULTI_CPU, so on a CPU the same config runs as plain data parallel. torch's FSDP2 itself (`fully_shard`
over a CPU device mesh, gloo) shards and gathers on CPU processes. The shim below does, for MULTI_CPU, what that
branch does for GPUs: the distributed type becomes FSDP (on the accelerator state and, as accelerate does at the
end of that __init__, on the shared partial state, or the next AcceleratorState() would copy MULTI_CPU back), the
plugin is kept and given the mixed precision. Everything after (preparing the model with fully_shard, sharded
checkpoints, the full state dict at the end) is accelerate's and transformers' own code.
"""

import os

if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
    import accelerate.state
    from accelerate.utils import DistributedType

    _init = accelerate.state.AcceleratorState.__init__

    def _fsdp_on_cpu(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None,
                     fsdp_plugin=None, *args, **kwargs):
        _init(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate.state.AcceleratorState.__init__ = _fsdp_on_cpu
