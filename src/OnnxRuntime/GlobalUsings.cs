// ONNX Runtime's C# sources expect these namespaces to be in scope (its own build supplies them).
global using System;
global using System.Reflection;
