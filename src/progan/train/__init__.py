"""progan.train"""
