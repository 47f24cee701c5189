"""Online serving (`conveyor serve`): one process group answering for every model of the fleet.

- `payload`: request bodies into typed columns, checked by batch scoring's serving contract;
- `checks`: that contract's row checks on a request, with batch scoring's refusals, in fewer operations;
- `fleet`: the loaded models (a bounded LRU cache) and the poller that follows their aliases;
- `predlog`: answered rows into the prediction log, in batches off the request path;
- `server`: the FastAPI app and its routes.
"""
