"""Terminal UI (Textual) and audio devices (sounddevice): the only modules importing them."""
