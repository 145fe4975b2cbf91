"""progan.data"""
