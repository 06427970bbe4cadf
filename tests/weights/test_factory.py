"""make_sender: which WeightSender each wiring gets (GPU engines? LoRA?), and what each one holds.

Nothing is sent here: a sender makes no call at construction (the actors are never called, the
group is a real one-rank gloo group, vLLM is not imported), so the choice is checked by hand
against weights/factory.py's table. The sends themselves are tested in test_plane.py (CPU, Ray),
test_broadcast.py, tests/learner/test_lora.py and test_vllm_transfer.py (GPU).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.weights.policies import lora_policy, tiny_policy
from weights.base import WeightSender
from weights.factory import make_sender
from weights.full_sender import FullModelSender
from weights.group import host_store, open_weight_group
from weights.lora_sender import LoraSender
from weights.peft_tensors import adapter_tensors, base_tensors
from weights.vllm_transfer import VLLMTransferSender

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def group():
    """A real weight group of rank 0 alone (what the plane hands a sender; nothing is sent on it)."""
    g = open_weight_group(HOST, 0, 0, 1, "gloo", 30, store=host_store(HOST, 1, 30))
    yield g
    g.abort()


ACTORS = [object(), object()]  # two actor handles: a sender keeps them, never calls them when made


def make(policy, *, lora, engine_ranks, group, generation=5):
    return make_sender(policy, lora=lora, engine_ranks=engine_ranks, actors=ACTORS, group=group,
                       generation=generation, host=HOST, timeout_s=30, bucket_bytes=1 << 20)


def layout_names(sender) -> list[str]:
    return [e.name for b in sender.layout for e in b.entries]


def test_cpu_engines_full_model_get_the_bucketed_broadcast_of_every_parameter(group):
    policy = tiny_policy()
    sender = make(policy, lora=False, engine_ranks=None, group=group)
    assert type(sender) is FullModelSender and isinstance(sender, WeightSender)
    assert sender.actors == ACTORS and sender.generation == 5
    assert layout_names(sender) == [n for n, _ in policy.named_parameters()]
    sender.close()
    sender.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sender.sync(1)


def test_gpu_engines_full_model_get_vllms_transfer_with_their_own_group_ranks():
    policy = tiny_policy()
    sender = make(policy, lora=False, engine_ranks=[1, 2], group=None)
    assert type(sender) is VLLMTransferSender and isinstance(sender, WeightSender)
    assert sender.world_size == 4 and sender.client.offsets == [1, 2]  # learner 0, engine A 1, engine B 2-3
    assert sender.client.actors == ACTORS
    named = sender.named()
    assert list(named) == [n for n, _ in policy.named_parameters()]
    assert all(named[n].data_ptr() == p.data_ptr() for n, p in policy.named_parameters())  # no copies
    sender.close()  # nothing opened yet: nothing to close


def test_lora_on_cpu_engines_sends_the_base_over_the_group_once_then_the_adapter(group):
    policy = lora_policy()
    sender = make(policy, lora=True, engine_ranks=None, group=group)
    assert type(sender) is LoraSender and isinstance(sender, WeightSender)
    assert type(sender.base) is FullModelSender and sender.base.generation == 5 and not sender.base_sent
    base_names = layout_names(sender.base)
    assert base_names == list(base_tensors(policy))
    assert "model.layers.0.self_attn.q_proj.weight" in base_names  # HF names: what the engine loaded
    assert not any("lora_" in n or "base_layer" in n for n in base_names)
    adapter = [e.name for b in sender._adapter.layout for e in b.entries]
    assert adapter == list(adapter_tensors(policy)) and len(adapter) == 4  # A and B of q_proj and v_proj
    assert sender.adapter_config["r"] == 4
    sender.close()


def test_lora_on_gpu_engines_sends_the_base_over_vllms_transfer_and_adapters_over_the_group(group):
    policy = lora_policy()
    sender = make(policy, lora=True, engine_ranks=[1, 1], group=group)
    assert type(sender) is LoraSender
    assert type(sender.base) is VLLMTransferSender and sender.base.world_size == 3
    assert list(sender.base.named()) == list(base_tensors(policy))
    assert sender.group is group and sender.generation == 5
    sender.close()


def test_the_weights_room_and_making_a_gpu_sender_import_no_vllm():
    code = ("import sys, weights, weights.plane\n"
            "from weights.factory import make_sender\n"
            "make_sender(__import__('torch').nn.Linear(2, 2), lora=False, engine_ranks=[1], actors=[None],"
            " group=None, generation=1, host='127.0.0.1', timeout_s=1, bucket_bytes=1)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'vllm', 'actors', 'learner', 'buffer', 'launch'}))")
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
