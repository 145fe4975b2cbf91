"""progan.tools"""
