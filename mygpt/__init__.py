"""Library code for mygpt that does not travel with the model's remote code.

The model itself lives in the root modules ``configuration_mygpt``, ``modeling_mygpt`` and
``generation_mygpt`` so that ``save_pretrained`` can copy them next to the weights; everything
else (data, training helpers, metrics, analysis) lives here and imports them.
"""
