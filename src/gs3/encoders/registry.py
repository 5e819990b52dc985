from gs3.registry import Registry

ENCODERS = Registry("encoder")


def build_encoder(config):
    return ENCODERS.build(config)
