"""progan.metrics"""
