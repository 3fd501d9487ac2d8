"""Token mixers (attention, Mamba, Mamba-2, Hyena) behind one protocol; see ``base.MixerProtocol``."""

from longseq.core.mixers.base import MixerProtocol

__all__ = ["MixerProtocol"]
