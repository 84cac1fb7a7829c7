"""Layer knowledge: what each module type's parameters are (roles, true fans, torch's default draws),
described once per type (``rules``), for torch.nn (``torch_nn``) and the model zoos by structure (``zoo``).
"""
