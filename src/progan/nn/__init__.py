"""progan.nn"""
