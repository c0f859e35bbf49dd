pytest_plugins = [
    "tests.support.backends",
    "tests.support.engine",
    "tests.support.image_server",
    "tests.support.listener",
    "tests.support.pipeline",
    "tests.support.console",
    "tests.support.seaweedfs",
    "tests.support.politeness",
    "tests.support.trash",
]
