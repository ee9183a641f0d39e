from benchmarks.harness import Context, Result


def run(ctx: Context) -> Result:
    return Result("latency")
