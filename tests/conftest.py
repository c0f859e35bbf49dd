pytest_plugins = ["tests.support.backends", "tests.support.image_server", "tests.support.pipeline"]
