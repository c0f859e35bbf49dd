"""The command line's client side: a thin client of the REST API (contract §13).

``http`` talks to the api, ``format`` turns jobs into lines and tables, ``progress`` follows a
job until it ends, ``commands`` wires them into the `images-service` argparse command. Nothing
here reads the server's settings or touches MongoDB, Redis or the storage.
"""
