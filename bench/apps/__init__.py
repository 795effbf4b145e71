"""Worker-side modules: what each measured system's worker process imports.

Each module here is as small as its system allows (the job, the broker or
database it talks to), since a worker's idle memory is one of the columns.
Settings come from environment variables the harness sets.
"""
